// Drives the official Loops JS SDK (npm "loops", pinned in package.json) against the local
// Loops API emulator and prints one JSON document: step name -> outcome.
//
// Usage: node sdk_check.mjs '<config JSON>'
// The config names the emulator's API root and keys plus the seeded ids to use; the Python test
// tests/integrations/loops/test_emulator_js_sdk.py builds it and asserts on the outcomes.
// Each outcome is {"ok": true, "value": ...} or {"ok": false, "error": {...}} so the test can
// check both results and the SDK's error classes.

import { APIError, LoopsClient, RateLimitExceededError } from "loops";

const config = JSON.parse(process.argv[2]);

function client(key) {
  const loops = new LoopsClient(key);
  // The SDK resolves "v1/..." paths against apiRoot, so it must end in "/api/".
  loops.apiRoot = config.apiRoot;
  return loops;
}

function describe(error) {
  const described = { name: error.name, message: error.message };
  if (error instanceof APIError) {
    described.class = "APIError";
    described.statusCode = error.statusCode;
    described.json = error.json;
  } else if (error instanceof RateLimitExceededError) {
    described.class = "RateLimitExceededError";
    described.limit = error.limit;
    described.remaining = error.remaining;
  }
  return described;
}

const outcomes = {};

async function step(name, run) {
  try {
    outcomes[name] = { ok: true, value: (await run()) ?? null };
  } catch (error) {
    outcomes[name] = { ok: false, error: describe(error) };
  }
}

const loops = client(config.key);
const email = "sdk@example.com";

await step("testApiKey", () => loops.testApiKey());
await step("createContact", () =>
  loops.createContact({
    email,
    properties: { firstName: "Sdk", lastName: "User", plan: "pro", userId: "user_sdk" },
    mailingLists: { [config.newsletterListId]: true },
  }),
);
await step("createContactDuplicate", () => loops.createContact({ email }));
await step("updateContact", () =>
  loops.updateContact({ email, properties: { seats: 3, plan: null } }),
);
await step("updateContactByUserId", () =>
  loops.updateContact({ userId: "user_sdk", properties: { lastName: "Changed" } }),
);
await step("updateContactUnknownUserId", () =>
  loops.updateContact({ userId: "user_nobody", properties: { firstName: "X" } }),
);
await step("findContact", () => loops.findContact({ email }));
await step("findContactByUserId", () => loops.findContact({ userId: config.adaUserId }));
await step("findContactMissing", () => loops.findContact({ email: "ghost@example.com" }));
await step("checkContactSuppression", () =>
  loops.checkContactSuppression({ email: config.suppressedEmail }),
);
await step("removeContactSuppression", () =>
  loops.removeContactSuppression({ email: config.suppressedEmail }),
);
await step("removeContactSuppressionAgain", () =>
  loops.removeContactSuppression({ email: config.suppressedEmail }),
);
await step("checkContactSuppressionMissing", () =>
  loops.checkContactSuppression({ email: "ghost@example.com" }),
);
await step("createContactProperty", () => loops.createContactProperty("favoriteColor", "string"));
await step("createContactPropertyDuplicate", () =>
  loops.createContactProperty("favoriteColor", "string"),
);
await step("listContactProperties", () => loops.listContactProperties());
await step("listContactPropertiesCustom", () => loops.listContactProperties("custom"));
await step("listMailingLists", () => loops.listMailingLists());
await step("sendEvent", () =>
  loops.sendEvent({
    email,
    eventName: "signup",
    contactProperties: { company: "SDK Inc" },
    eventProperties: { plan: "pro", amount: 10 },
    mailingLists: { [config.betaListId]: true },
    headers: { "Idempotency-Key": "sdk-event-1" },
  }),
);
await step("sendEventRepeated", () =>
  loops.sendEvent({ email, eventName: "signup", headers: { "Idempotency-Key": "sdk-event-1" } }),
);
await step("sendEventEmptyKey", () =>
  loops.sendEvent({ email, eventName: "login", headers: { "Idempotency-Key": "" } }),
);
await step("sendTransactionalEmail", () =>
  loops.sendTransactionalEmail({
    transactionalId: config.receiptTemplateId,
    email,
    dataVariables: { order_id: "A-1", amount: 42 },
    headers: { "Idempotency-Key": "sdk-tx-1" },
  }),
);
await step("sendTransactionalEmailMissingVariable", () =>
  loops.sendTransactionalEmail({
    transactionalId: config.receiptTemplateId,
    email,
    dataVariables: { order_id: "A-2" },
  }),
);
await step("sendTransactionalEmailUnknown", () =>
  loops.sendTransactionalEmail({ transactionalId: "cnosuchtemplate", email }),
);
await step("sendTransactionalEmailDraft", () =>
  loops.sendTransactionalEmail({
    transactionalId: config.draftTemplateId,
    email,
    dataVariables: { reset_url: "https://example.com/reset" },
  }),
);
await step("sendTransactionalEmailToNewAudience", () =>
  loops.sendTransactionalEmail({
    transactionalId: config.welcomeTemplateId,
    email: "newcomer@example.com",
    addToAudience: true,
  }),
);
await step("listTransactionalEmails", () => loops.listTransactionalEmails());
await step("listTransactionalEmailsPerPage", () => loops.listTransactionalEmails({ perPage: 10 }));
await step("listDedicatedSendingIps", () => loops.listDedicatedSendingIps());
await step("deleteContact", () => loops.deleteContact({ email }));
await step("deleteContactAgain", () => loops.deleteContact({ email }));

const limited = client(config.limitedKey);
await step("rateLimitFirst", () => limited.testApiKey());
await step("rateLimitSecond", () => limited.testApiKey());
await step("invalidKey", () => client("not-a-real-key").testApiKey());

console.log(JSON.stringify(outcomes));
