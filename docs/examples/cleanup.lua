-- Cleanup: erase the contacts that asked to be forgotten. Each address is looked up first;
-- the ones Loops knows are deleted, the others are reported as not found.
--
-- See the plan first (reads run, deletes are only recorded):
--   luabridge run docs/examples/cleanup.lua --emulator --allow destructive --dry-run
-- Then run it for real (deleting needs --allow destructive; without it the run stops with a
-- PermissionError before anything is deleted):
--   luabridge run docs/examples/cleanup.lua --emulator --allow destructive \
--     --input '{"emails": ["alan@example.com", "barbara@example.com"]}'

local input = ... or {}
local emails = input.emails or {"alan@example.com", "barbara@example.com", "nobody@example.com"}
local loops = app.integrations.loops

-- app.array() keeps an empty list a JSON array ([]) in the result instead of an object.
local deleted, planned, not_found, failed = app.array(), app.array(), app.array(), app.array()
for _, email in ipairs(emails) do
  local found = loops.find_contact({email = email})
  if not found.success then
    table.insert(failed, {email = email, error = found.error})
  elseif found.contact == nil then
    table.insert(not_found, email)
  else
    local result = loops.delete_contact({email = email})
    if result.dry_run then
      -- A dry run validates and records the request, and sends nothing.
      table.insert(planned, email)
    elseif result.success then
      table.insert(deleted, email)
    else
      table.insert(failed, {email = email, error = result.error})
    end
  end
end

print(string.format("%d deleted, %d planned (dry run), %d not found, %d failed",
  #deleted, #planned, #not_found, #failed))
return {deleted = deleted, planned = planned, not_found = not_found, failed = failed}
