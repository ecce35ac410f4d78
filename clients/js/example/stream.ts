// The README's example, type-checked by `tsc --noEmit` (tests/test_js_client.py): if the
// declarations or the frame types drift from how the client is used, this stops compiling.
import { DocgenClient, DocgenError, explainError, type Outline } from "@docgen/client";
import type { SessionFrame } from "@docgen/client/frames";

export async function writeDocument(
  token: string,
  outline: Outline,
  write: (text: string) => void,
): Promise<string> {
  const client = new DocgenClient({ url: "ws://127.0.0.1:8080/v1/ws", token });
  const run = client.generate(outline);
  try {
    for await (const event of run) {
      if (event.type === "section_chunk") write(event.delta);
      if (event.type === "section_end" && event.verified === false) throw new Error("hash mismatch");
      if (event.type === "summary_update") console.error(`summary v${event.version}`);
    }
  } catch (error) {
    if (error instanceof DocgenError) console.error(explainError(error, outline));
    throw error;
  } finally {
    client.close();
  }
  const session: SessionFrame | null = client.session;
  console.error(session?.user, run.state.totals?.output_tokens);
  return run.toMarkdown();
}
