// Types of docgen.js. The frame types come from frames.d.ts, generated from schemas/ by
// scripts/generate-types.mjs; this file only declares the client's own API.

import type {
  ErrorFrame,
  GenerateFrame,
  PongFrame,
  RunEndFrame,
  RunEvent,
  RunsAck,
  SectionEndFrame,
  SessionFrame,
} from "./frames.js";

export type * from "./frames.js";

export declare const SUBPROTOCOL: "docgen.v1";
export declare const VERSION: string;

/** The outline of a `generate` frame (document_id, title, sections…). */
export type Outline = NonNullable<GenerateFrame["outline"]>;
/** A planned document by reference: `{plan: {document_id}}`. */
export type PlanReference = { plan: NonNullable<GenerateFrame["plan"]> };

/** What a run yields: its events in `seq` order, once each; `section_end` also says whether
 * the assembled text matched `text_sha256` (null: no Web Crypto to check with). */
export type ClientRunEvent =
  | Exclude<RunEvent, SectionEndFrame>
  | (SectionEndFrame & { verified: boolean | null });

export declare class DocgenError extends Error {
  readonly name: "DocgenError";
  /** The protocol's stable code (`invalid_frame`, `run_not_found`, `token_expired`…), or the
   * client's own: `unreachable`, `connection_refused`, `frame_too_large`, `missing_token`,
   * `policy_violation`, `client_closed`. */
  readonly code: string;
  readonly retryable: boolean;
  readonly requestId?: string;
  readonly runId?: string;
  /** The WebSocket close code, when the error comes from a close. */
  readonly closeCode?: number;
  /** The server's error frame, when there was one. */
  readonly frame?: ErrorFrame;
}

export interface SectionState {
  id: string;
  index: number;
  title: string;
  targetTokens: number;
  text: string;
  state: "pending" | "writing" | "ended";
  attempt: number;
  /** Chunks of the current attempt: about one per token. */
  chunks: number;
  outputTokens: number | null;
  finishReason: SectionEndFrame["finish_reason"] | null;
  verified: boolean | null;
}

export interface DocumentState {
  runId: string | null;
  documentId: string | null;
  title: string | null;
  language: string | null;
  status: "starting" | "resuming" | "running" | RunEndFrame["status"] | "failed_to_follow";
  sections: SectionState[];
  summary: string | null;
  summaryVersion: number;
  totals: RunEndFrame["totals"] | null;
  errors: ErrorFrame[];
}

export declare class Run implements AsyncIterable<ClientRunEvent> {
  readonly requestId: string;
  /** Known from `run_started` on (at once for `resume`). */
  readonly runId: string | null;
  /** Every event up to this seq has been applied to `state`. */
  readonly lastSeq: number;
  readonly state: DocumentState;
  readonly ended: boolean;
  /** Why the run could not be followed (refused, unreachable…), else null. */
  readonly error: DocgenError | null;
  /** Resolves to `run_end`; rejects with a `DocgenError` if the run cannot be followed. */
  readonly done: Promise<RunEndFrame>;
  cancel(): Promise<unknown>;
  toMarkdown(): string;
  [Symbol.asyncIterator](): AsyncIterator<ClientRunEvent>;
}

/** The browser's WebSocket constructor, or one with the same shape (Node: the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (
  url: string,
  protocols: string[],
  options?: unknown,
) => WebSocketLike;

export type ClientStatus =
  | "idle"
  | "connecting"
  | "open"
  | "session"
  | "reconnecting"
  | "refresh_failed"
  | "closed";

export interface DocgenClientOptions {
  /** `ws(s)://HOST:PORT/v1/ws` */
  url: string;
  /** A JWT; or omit it and give `getToken`. */
  token?: string;
  /** A fresh JWT for the same user: used before expiry (in-band `refresh`) and after a close
   * that refused the token. */
  getToken?: () => string | Promise<string>;
  /** Default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor | typeof globalThis.WebSocket;
  /** Third argument to the constructor (Node's `ws`: `{origin, headers}`). */
  webSocketOptions?: unknown;
  onStatus?: (status: ClientStatus, detail: unknown) => void;
  /** Hex SHA-256 of a text's UTF-8 bytes; default: Web Crypto. */
  sha256?: (text: string) => Promise<string | null>;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  reconnectBaseMs?: number;
  reconnectMaxMs?: number;
  maxReconnectAttempts?: number;
  refreshBeforeMs?: number;
}

export declare class DocgenClient {
  constructor(options: DocgenClientOptions);
  readonly url: string;
  /** The `session` frame, once it arrived (null from a server before revision 2). */
  readonly session: SessionFrame | null;
  /** When the socket's token expires (Unix ms): from the token, the session frame, and each
   * `refresh`. */
  readonly tokenExpiresAt: number | null;
  readonly status: ClientStatus;
  readonly reconnects: number;
  generate(
    outline: Outline | PlanReference,
    options?: { requestId?: string; options?: GenerateFrame["options"] },
  ): Run;
  resume(runId: string, options?: { afterSeq?: number; requestId?: string; outline?: Outline }): Run;
  cancel(runId: string): Promise<unknown>;
  runs(): Promise<RunsAck["runs"]>;
  ping(): Promise<PongFrame>;
  refresh(token: string): Promise<number>;
  connect(): Promise<SessionFrame | null>;
  close(): void;
}

export declare function sha256Hex(text: string): Promise<string | null>;
export declare function tokenExpiresAt(token: string): number | null;
export declare function toMarkdown(document: {
  title: string;
  sections: Pick<SectionState, "title" | "text" | "finishReason">[];
}): string;
/** A sentence for an error answer: what is wrong, where, the rule, then the stable code. */
export declare function explainError(
  error: { code: string; message?: string },
  outline?: unknown,
): string;
