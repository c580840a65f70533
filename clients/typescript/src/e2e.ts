/**
 * The client's end-to-end scenario against a real Corral server, run by
 * tests/e2e/test_typescript_client.py on the deployed tests/apps/json_app.py:
 *
 *   node dist/e2e.js URL TOKEN APP
 *
 * Prints one JSON object: each step's outcome (a value, or the error's class and message).
 */

import { CorralClient, CorralError, DeadlineExceededError, Json, UserError } from "./index";

type Outcome = { value?: Json; error?: string; message?: string; extra?: Json };

async function outcome(step: () => Promise<Json>): Promise<Outcome> {
  try {
    return { value: await step() };
  } catch (err) {
    if (!(err instanceof CorralError)) throw err;
    const extra: Json = err instanceof UserError ? { type: err.type, qualifiedType: err.qualifiedType, traceback: err.traceback } : null;
    return { error: err.constructor.name, message: err.message, extra };
  }
}

async function main(): Promise<void> {
  const [url, token, app] = process.argv.slice(2);
  const client = new CorralClient({ url, token });
  const report: Record<string, Outcome> = {};
  try {
    const cls = await client.lookup(app, "JsonModel");
    report.signature = { value: cls.classDef.methods.find((m) => m.name === "echo")!.signature!.arguments.map((a) => `${a.name}:${a.type}`) };
    const model = await cls.bind({ prefix: ">" });
    report.call = await outcome(() => model.call("echo", ["ab"], { times: 2, data: Buffer.from("hi").toString("base64"), scale: 2 }));
    report.big = await outcome(() => model.call("big", ["9007199254740993"]));
    report.userError = await outcome(() => model.call("fail", ["no good"]));
    report.invalidArgument = await outcome(() => model.call("echo", ["ab"], { colour: "red" }));
    report.unencodable = await outcome(() => model.call("opaque"));
    report.unknownMethod = await outcome(() => model.call("nope"));
    report.spawn = await outcome(async () => (await model.spawn("echo", ["spawned"])).get(60));
    // A deadline on a waiting call leaves the call running; its id (from the initial metadata) collects it.
    report.deadline = await outcome(async () => {
      try {
        return await model.call("slow", [3], {}, { deadlineMs: 1000 });
      } catch (err) {
        if (!(err instanceof DeadlineExceededError) || !err.callId) throw err;
        return { callId: err.callId, value: await model.get(err.callId).get(60) };
      }
    });
    report.unknownClass = await outcome(async () => (await client.lookup(app, "Nope")).classDef.name);
    report.badParameter = await outcome(async () => (await cls.bind({ prefix: 3 })).serviceId);
  } finally {
    client.close();
  }
  const stranger = new CorralClient({ url, token: "not-the-token" });
  try {
    report.badToken = await outcome(async () => (await stranger.lookup(app, "JsonModel")).appId);
  } finally {
    stranger.close();
  }
  process.stdout.write(JSON.stringify(report) + "\n");
}

main().catch((err) => {
  process.stderr.write(`e2e failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
