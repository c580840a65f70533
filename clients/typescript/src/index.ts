/**
 * A small typed client for Corral's corral.v1 protocol (docs/protocol.md), written from the protos
 * and that document alone: look up a deployed class, bind its parameters, call its methods in JSON,
 * spawn calls and collect them.
 *
 *   const client = new CorralClient({ url: "grpc://127.0.0.1:7470", token });
 *   const model = await (await client.lookup("my-app", "Model")).bind({ size: 3 });
 *   const out = await model.call("predict", ["hello"], { temperature: 0.5 });
 *   const later = await model.spawn("predict", ["world"]);
 *   console.log(await later.get());
 *
 * Every failure is a `CorralError` subclass: `UserError` (the method raised), `InvalidArgumentError`
 * (the arguments do not fit), `FunctionTimeoutError`, `InitError`, `ContainerError`, `CancelledError`,
 * `NotFoundError`, `AuthError`, `VersionMismatchError`, `DeadlineExceededError` (carries the call id).
 */

import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const PROTOCOL_VERSION = "1";
const CALL_ID_KEY = "corral-call-id";
const ERROR_REASON_KEY = "corral-error-reason";

/** A JSON value, as sent and received. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A class parameter's value: string, integer (number or bigint), boolean or bytes. */
export type ParameterInput = string | number | bigint | boolean | Uint8Array;

export interface ClientOptions {
  /** `grpc://host:port` (plain) or `grpcs://host:port` (TLS). */
  url: string;
  /** The control plane's admin token (`corral up` prints where it is). */
  token: string;
  /** The folder holding `corral/v1/*.proto`; defaults to the repository's packages/protocol/proto. */
  protoDir?: string;
}

export interface CallOptions {
  /** A deadline for this RPC; when it fires the call keeps running (DeadlineExceededError.callId). */
  deadlineMs?: number;
}

// Errors -----------------------------------------------------------------------------------------

export class CorralError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
/** The method raised. `type` is the exception's class name; `traceback` only for dev (ephemeral) apps. */
export class UserError extends CorralError {
  constructor(message: string, readonly type: string, readonly qualifiedType: string, readonly traceback: string) {
    super(`${type}: ${message}`);
  }
}
/** The arguments do not fit the method's signature, or the JSON was malformed; no user code ran. */
export class InvalidArgumentError extends CorralError {}
/** The call ran past the class's timeout. */
export class FunctionTimeoutError extends CorralError {}
/** An @enter hook raised; the container never served. */
export class InitError extends CorralError {}
/** The container died, or the platform failed. */
export class ContainerError extends CorralError {}
/** The call was cancelled (CancelCall, or its app was stopped). */
export class CancelledError extends CorralError {}
/** An RPC failed with a gRPC status (the request itself was refused). */
export class RpcError extends CorralError {
  constructor(message: string, readonly code: grpc.status, readonly reason: string) {
    super(message);
  }
}
export class NotFoundError extends RpcError {}
export class AuthError extends RpcError {}
export class VersionMismatchError extends RpcError {}
/** Invoke(wait=true)'s deadline fired; the call goes on, and `service.get(callId)` collects it. */
export class DeadlineExceededError extends RpcError {
  constructor(message: string, code: grpc.status, reason: string, readonly callId: string) {
    super(message, code, reason);
  }
}

// Wire types: the few corral.v1 messages this client reads (proto-loader with keepCase). --------

interface Payload { format: string; data: Buffer }
interface WireResult {
  status: string;
  value: Payload | null;
  exception: Payload | null;
  exception_type: string;
  message: string;
  traceback: string;
}
interface ParameterSpec { name: string; type: string; has_default: boolean }
export interface ArgumentSpec { name: string; kind: string; has_default: boolean; type: string; nullable: boolean }
export interface MethodDef { name: string; signature: { arguments: ArgumentSpec[] } | null }
export interface ClassDef { name: string; module: string; methods: MethodDef[]; parameters: ParameterSpec[] }

type Unary = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<any>) => grpc.ClientUnaryCall;

function loadControlService(protoDir: string): grpc.ServiceClientConstructor {
  const definition = protoLoader.loadSync("corral/v1/control.proto", {
    includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as any;
  return loaded.corral.v1.ControlService as grpc.ServiceClientConstructor;
}

function toRpcError(err: grpc.ServiceError, callId = ""): RpcError {
  const reason = String(err.metadata?.get(ERROR_REASON_KEY)?.[0] ?? "");
  const message = err.details || err.message;
  switch (err.code) {
    case grpc.status.NOT_FOUND:
      return new NotFoundError(message, err.code, reason);
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return new AuthError(message, err.code, reason);
    case grpc.status.FAILED_PRECONDITION:
      return new VersionMismatchError(message, err.code, reason); // ControlService's only FAILED_PRECONDITION
    case grpc.status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(message, err.code, reason, callId);
    default:
      return new RpcError(message, err.code, reason);
  }
}

/** The value of a Result, or the matching error. */
export function unwrapResult(result: WireResult): Json {
  switch (result.status) {
    case "RESULT_STATUS_SUCCESS":
      return JSON.parse(result.value?.data?.toString("utf8") || "null") as Json;
    case "RESULT_STATUS_USER_ERROR": {
      let body: { type?: string; qualified_type?: string; message?: string; traceback?: string } = {};
      if (result.exception?.format === "PAYLOAD_FORMAT_JSON") body = JSON.parse(result.exception.data.toString("utf8"));
      return throwing(new UserError(body.message ?? result.message, body.type ?? (result.exception_type.split(".").pop() || "Error"),
        body.qualified_type ?? result.exception_type, body.traceback ?? result.traceback));
    }
    case "RESULT_STATUS_INVALID_ARGUMENT":
      return throwing(new InvalidArgumentError(result.message));
    case "RESULT_STATUS_TIMEOUT":
      return throwing(new FunctionTimeoutError(result.message));
    case "RESULT_STATUS_INIT_ERROR":
      return throwing(new InitError(result.traceback ? `${result.message}\n\n${result.traceback}` : result.message));
    case "RESULT_STATUS_INTERNAL_ERROR":
      return throwing(new ContainerError(result.message));
    case "RESULT_STATUS_CANCELLED":
      return throwing(new CancelledError(result.message || "the call was cancelled"));
    default: // a status newer than this client
      return throwing(new CorralError(result.message || `the call failed with ${result.status}`));
  }
}

function throwing(err: Error): never {
  throw err;
}

function parameterValue(spec: ParameterSpec | undefined, name: string, value: ParameterInput): object {
  const type = spec?.type;
  if (type === "PARAMETER_TYPE_STRING" && typeof value === "string") return { string_value: value };
  if (type === "PARAMETER_TYPE_INT" && (typeof value === "bigint" || (typeof value === "number" && Number.isInteger(value)))) {
    return { int_value: value.toString() };
  }
  if (type === "PARAMETER_TYPE_BOOL" && typeof value === "boolean") return { bool_value: value };
  if (type === "PARAMETER_TYPE_BYTES" && value instanceof Uint8Array) return { bytes_value: Buffer.from(value) };
  if (type === "PARAMETER_TYPE_FLOAT" && typeof value === "number" && Number.isFinite(value)) return { float_value: value + 0 };
  if (spec === undefined) throw new InvalidArgumentError(`unknown parameter ${JSON.stringify(name)}`);
  throw new InvalidArgumentError(`parameter ${JSON.stringify(name)} must be of type ${type}, got ${typeof value}`);
}

// The client ---------------------------------------------------------------------------------------

export class CorralClient {
  private readonly stub: grpc.Client & Record<string, Unary>;
  private readonly metadata: grpc.Metadata;

  constructor(options: ClientOptions) {
    const match = /^(grpcs?):\/\/(.+)$/.exec(options.url);
    if (!match) throw new CorralError(`server URL must be grpc://host:port or grpcs://host:port, got ${options.url}`);
    const credentials = match[1] === "grpcs" ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
    const protoDir = options.protoDir ?? path.resolve(__dirname, "..", "..", "..", "packages", "protocol", "proto");
    const Service = loadControlService(protoDir);
    this.stub = new Service(match[2], credentials) as any;
    this.metadata = new grpc.Metadata();
    this.metadata.set("authorization", `Bearer ${options.token}`);
    this.metadata.set("corral-protocol-version", PROTOCOL_VERSION);
  }

  close(): void {
    this.stub.close();
  }

  /** A deployed class by app and class name. */
  async lookup(app: string, className: string): Promise<ClassRef> {
    const answer = await this.unary("LookupClass", { app_name: app, class_name: className });
    return new ClassRef(this, answer.app_id, answer.class_def as ClassDef);
  }

  /** @internal one unary RPC; `onCallId` receives Invoke's call id from the initial metadata. */
  unary(method: string, request: object, options: CallOptions = {}, onCallId?: (id: string) => void): Promise<any> {
    return new Promise((resolve, reject) => {
      const callOptions: grpc.CallOptions = options.deadlineMs !== undefined ? { deadline: Date.now() + options.deadlineMs } : {};
      let callId = "";
      const call = this.stub[method](request, this.metadata, callOptions, (err: grpc.ServiceError | null, response: any) => {
        if (err) reject(toRpcError(err, callId));
        else resolve(response);
      });
      call.on("metadata", (metadata: grpc.Metadata) => {
        callId = String(metadata.get(CALL_ID_KEY)[0] ?? "");
        if (callId && onCallId) onCallId(callId);
      });
    });
  }
}

/** A looked-up class: its definition, and `bind` for a parameter set. */
export class ClassRef {
  constructor(private readonly client: CorralClient, readonly appId: string, readonly classDef: ClassDef) {}

  /** Bind parameters (defaults fill the rest; the server validates) and get the service to call. */
  async bind(parameters: Record<string, ParameterInput> = {}): Promise<Service> {
    const specs = new Map(this.classDef.parameters.map((spec) => [spec.name, spec]));
    const named = Object.keys(parameters).sort().map((name) => ({ name, value: parameterValue(specs.get(name), name, parameters[name]) }));
    const answer = await this.client.unary("BindService", { app_id: this.appId, class_name: this.classDef.name, parameters: named });
    return new Service(this.client, answer.service_id, this.classDef);
  }
}

/** A bound service: call its methods, spawn calls, collect them. */
export class Service {
  constructor(private readonly client: CorralClient, readonly serviceId: string, readonly classDef: ClassDef) {}

  private request(method: string, args: Json[], kwargs: Record<string, Json>, wait: boolean): object {
    const data = Buffer.from(JSON.stringify({ args, kwargs }), "utf8");
    return { service_id: this.serviceId, method, args: { format: "PAYLOAD_FORMAT_JSON", data }, wait };
  }

  /** Call a method and wait for its value. Bytes travel as base64 strings, big integers as strings of digits. */
  async call(method: string, args: Json[] = [], kwargs: Record<string, Json> = {}, options: CallOptions = {}): Promise<Json> {
    const answer = await this.client.unary("Invoke", this.request(method, args, kwargs, true), options);
    return unwrapResult(answer.result as WireResult);
  }

  /** Start a call without waiting; collect it with `FunctionCall.get`. */
  async spawn(method: string, args: Json[] = [], kwargs: Record<string, Json> = {}): Promise<FunctionCall> {
    const answer = await this.client.unary("Invoke", this.request(method, args, kwargs, false));
    return new FunctionCall(this.client, answer.call_id as string);
  }

  /** A handle on a call by its id (from `spawn`, or from a DeadlineExceededError). */
  get(callId: string): FunctionCall {
    return new FunctionCall(this.client, callId);
  }
}

/** A call in flight. */
export class FunctionCall {
  constructor(private readonly client: CorralClient, readonly callId: string) {}

  /** Wait for the value (long-polls GetResult in 50 s steps); `timeoutS` bounds the whole wait. */
  async get(timeoutS?: number): Promise<Json> {
    const until = timeoutS === undefined ? Infinity : Date.now() + timeoutS * 1000;
    for (;;) {
      const left = Math.max(0, Math.min(50, (until - Date.now()) / 1000));
      const answer = await this.client.unary("GetResult", { call_id: this.callId, timeout_s: left }, { deadlineMs: left * 1000 + 30_000 });
      if (answer.done) return unwrapResult(answer.result as WireResult);
      if (Date.now() >= until) throw new CorralError(`call ${this.callId} is not done after ${timeoutS} s`);
    }
  }

  async cancel(): Promise<void> {
    await this.client.unary("CancelCall", { call_id: this.callId });
  }
}
