// Appended to the Node.js snippet of docs/receivers.md: one verdict per delivery on stdin
// (kind, key, webhook-id, webhook-timestamp, webhook-signature, base64 body; tab-separated).
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  for (const line of input.split("\n").filter(Boolean)) {
    const [kind, key, id, timestamp, signature, body] = line.split("\t");
    const headers = { "webhook-id": id, "webhook-timestamp": timestamp, "webhook-signature": signature };
    const verify = kind === "ed25519" ? genuineEd25519 : genuine;
    let verdict;
    try {
      verdict = verify(key, headers, Buffer.from(body, "base64"));
    } catch (error) {
      verdict = `error: ${error.message}`;
    }
    console.log(verdict);
  }
});
