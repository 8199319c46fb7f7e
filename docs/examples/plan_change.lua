-- Plan change: when a customer changes plan, find their contact, record the new plan and seat
-- count on it, and send a "plan_changed" event carrying the old and new plan.
--
-- Run it against the local emulator (Grace moves from the free plan to team):
--   luabridge run docs/examples/plan_change.lua --emulator --allow write \
--     --input '{"email": "grace@example.com", "plan": "team", "seats": 5}'

local input = ... or {}
local email = input.email or "grace@example.com"
local new_plan = input.plan or "pro"
local loops = app.integrations.loops

local found = loops.find_contact({email = email})
if not found.success then
  error("find_contact failed: " .. found.error .. " (" .. found.code .. ")")
end
if found.contact == nil then
  -- Nothing to change: report it rather than creating a contact for an unknown customer.
  return {changed = false, email = email, reason = "no Loops contact has this email"}
end

local contact = found.contact
local old_plan = contact.properties.plan
if old_plan == new_plan then
  return {changed = false, email = email, reason = "already on " .. new_plan}
end

-- The id from find_contact works as contact_id: the contact directory recorded it.
local updated = loops.update_contact({
  contact_id = contact.id,
  user_group = "customers",
  properties = {plan = new_plan, seats = input.seats or app.null},
})
if not updated.success then
  error("update_contact failed: " .. updated.error .. " (" .. updated.code .. ")")
end

local event = loops.send_event({
  email = email,
  event_name = "plan_changed",
  properties = {from_plan = old_plan or "none", to_plan = new_plan},
})
if not event.success then
  error("send_event failed: " .. event.error .. " (" .. event.code .. ")")
end

print(string.format("%s: %s -> %s", email, tostring(old_plan), new_plan))
return {changed = true, email = email, contact_id = contact.id, from = old_plan, to = new_plan}
