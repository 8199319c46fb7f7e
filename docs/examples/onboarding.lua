-- Onboarding: when someone signs up, create or update their Loops contact, subscribe them to
-- the newsletter, and send the "signup" event that starts the welcome loop.
--
-- Run it against the local emulator (without --input it signs up a sample person):
--   luabridge run docs/examples/onboarding.lua --emulator --allow write \
--     --input '{"email": "nia@example.com", "first_name": "Nia", "plan": "trial"}'
-- Add --dry-run to see the requests it would send, without sending them.

local input = ... or {}
local email = input.email or "nia.okafor@example.com"
local plan = input.plan or "free"

-- The emulator's public "Newsletter" list; in a real workspace, take the id from
-- app.integrations.loops.list_mailing_lists().
local NEWSLETTER_LIST_ID = input.list_id or "clistnewsletter0000000001"

local loops = app.integrations.loops

-- Remote failures come back as {success = false, code = ..., error = ...}: stop the run with
-- a clear message, so the host can retry the whole signup when retrying can help.
local function check(result, step)
  if not result.success then
    error(string.format("%s failed: %s (%s)%s", step, result.error, result.code,
      result.retryable and "; retrying later can help" or ""), 2)
  end
  return result
end

-- update_contact creates the contact when the email is new and updates it otherwise, so a
-- second signup with the same address does not fail.
local contact = check(loops.update_contact({
  email = email,
  first_name = input.first_name,
  last_name = input.last_name,
  user_group = plan == "free" and "free" or "trial",
  properties = {plan = plan, signupDate = os.date("!%Y-%m-%d")},
  mailing_lists = {[NEWSLETTER_LIST_ID] = true},
}), "update_contact")

local event = check(loops.send_event({
  email = email,
  event_name = "signup",
  properties = {plan = plan},
}), "send_event")

print(string.format("onboarded %s (contact %s), plan %s", email, tostring(contact.id), plan))
return {
  email = email,
  contact_id = contact.id,
  subscribed_to = NEWSLETTER_LIST_ID,
  event_sent = not event.dry_run,
}
