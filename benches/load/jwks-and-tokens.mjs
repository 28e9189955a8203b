// The upstream identity provider for the load benchmark: serves a JWKS and mints the session
// tokens that the load generator replays against both servers.
//
// It listens on 127.0.0.1 port 0 first and mints afterwards, because `iss` has to carry the real
// port and asking the kernel for the port is the only race-free way to get one. Only when the
// tokens file is complete is the port written to --port-file, so the caller can treat the port
// file's existence as "tokens and JWKS are both ready".
//
// usage: node jwks-and-tokens.mjs --tokens FILE --port-file FILE [--count 2000]
import http from "node:http";
import { randomUUID } from "node:crypto";
import { rename, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { SignJWT, exportJWK, generateKeyPair } from "jose";

const { values: args } = parseArgs({
  options: {
    tokens: { type: "string" },
    "port-file": { type: "string" },
    count: { type: "string", default: "2000" },
  },
});
if (!args.tokens || !args["port-file"]) {
  console.error("usage: node jwks-and-tokens.mjs --tokens FILE --port-file FILE [--count N]");
  process.exit(2);
}
const count = Number(args.count);
if (!Number.isInteger(count) || count < 1) {
  console.error(`--count must be a positive integer, got ${JSON.stringify(args.count)}`);
  process.exit(2);
}

const kid = "bench-rsa-1";
const { publicKey, privateKey } = await generateKeyPair("RS256", { modulusLength: 2048 });
const jwks = JSON.stringify({
  keys: [{ ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" }],
});

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/.well-known/jwks.json") {
    res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=3600" });
    return res.end(jwks);
  }
  res.writeHead(404, { "content-type": "application/json" });
  res.end('{"error":"not found"}');
});
await new Promise((resolve, reject) => {
  server.once("error", reject);
  server.listen(0, "127.0.0.1", resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

// Distinct subjects (and so distinct tokens) keep either server from winning by caching a verified
// token; every 4th user carries the support role so both capability shapes are exercised.
const now = Math.floor(Date.now() / 1000);
const lines = [];
for (let i = 1; i <= count; i++) {
  const token = await new SignJWT({ metadata: { role: i % 4 === 0 ? "support" : "member" } })
    .setProtectedHeader({ alg: "RS256", kid, typ: "JWT" })
    .setIssuer(issuer)
    .setSubject(`user-${i}`)
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .setJti(randomUUID())
    .sign(privateKey);
  lines.push(token);
}
// Write-then-rename so a reader never sees a half-written file.
await writeFile(`${args.tokens}.partial`, lines.join("\n") + "\n");
await rename(`${args.tokens}.partial`, args.tokens);
await writeFile(`${args["port-file"]}.partial`, `${port}\n`);
await rename(`${args["port-file"]}.partial`, args["port-file"]);
console.log(`jwks on ${issuer}/.well-known/jwks.json, ${count} tokens in ${args.tokens}`);
// Runs until the harness kills it: both servers may refetch the JWKS at any point of the run.
