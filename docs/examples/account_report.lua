-- Account report: a read-only overview of every Loops account this run may use: its team,
-- mailing lists, custom contact properties and published transactional emails. It changes
-- nothing, so it needs no --allow.
--
-- Run it against the local emulator (three accounts: default, marketing, transactional):
--   luabridge run docs/examples/account_report.lua --emulator

local report = {}
for _, account in ipairs(app.accounts("loops")) do
  local loops = app.integrations.loops[account.name]
  local me = loops.get_current_user()
  if not me.success then
    report[account.name] = {error = me.error, code = me.code}
  else
    local lists = loops.list_mailing_lists()
    local props = loops.list_contact_properties({list = "custom"})
    local emails = loops.list_transactional_emails({})

    local list_names, property_names, email_names = {}, {}, {}
    for _, l in ipairs(lists.mailing_lists) do table.insert(list_names, l.name) end
    for _, p in ipairs(props.properties) do table.insert(property_names, p.key .. ":" .. p.type) end
    for _, t in ipairs(emails.transactional_emails) do table.insert(email_names, t.name) end

    print(string.format("%-13s team %-13s %d lists, %d custom properties, %d emails",
      account.name, me.team_name, #list_names, #property_names, #email_names))
    report[account.name] = {
      team = me.team_name,
      mailing_lists = list_names,
      custom_properties = property_names,
      transactional_emails = email_names,
    }
  end
end
return report
