-- Receipt: after a purchase, send the "Order receipt" transactional email with the order's
-- data variables, from the account named "transactional".
--
-- Run it against the local emulator:
--   luabridge run docs/examples/receipt.lua --emulator --allow write \
--     --input '{"email": "ada@example.com", "order_id": "A-1042", "amount": 49.5}'

local input = ... or {}
local email = input.email or "ada@example.com"
local order_id = input.order_id or "A-1001"
local amount = input.amount or 19

-- The emulator's published "Order receipt" template; it requires order_id and amount.
-- app.integrations.loops.list_transactional_emails() lists the templates of an account.
local RECEIPT_TEMPLATE_ID = input.transactional_id or "ctxreceipt000000000000001"

-- A named account: same actions, its own credentials (see app.accounts("loops")).
local loops = app.integrations.loops.transactional

local sent = loops.send_transactional_email({
  transactional_id = RECEIPT_TEMPLATE_ID,
  email = email,
  data_variables = {
    order_id = order_id,
    amount = string.format("%.2f", amount),
  },
})

-- A rejected send (unknown template, missing variable) is returned, not raised.
if not sent.success then
  error(string.format("receipt for order %s not sent: %s (%s)", order_id, sent.error, sent.code))
end

-- The idempotency key makes retries safe: Loops drops a second send with the same key.
print(string.format("receipt for order %s sent to %s", order_id, email))
return {order_id = order_id, email = email, idempotency_key = sent.idempotency_key}
