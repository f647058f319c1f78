// porthold in a `node --test` suite.
//
// The first test starts a server with `porthold run --ephemeral`: porthold
// binds a kernel-chosen port first and hands the bound socket to the server
// as fd 3 (LISTEN_FDS), so no other process can take the port in between.
// `porthold wait` and `porthold url` find it by name.
//
// The second leases a port with `porthold pick` (outside the kernel's
// ephemeral range, free at handout) for a server that binds by itself.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import http from "node:http";

const porthold = (...args) =>
  execFileSync("porthold", args, { encoding: "utf8" }).trim();

// A server that takes its listening socket from fd 3 instead of binding.
const SERVE_FD3 = `
require("node:http")
  .createServer((req, res) => res.end("hello from porthold"))
  .listen({ fd: 3 });
`;

test("a server started by porthold run answers on its url", async () => {
  const name = `node-test-${process.pid}`;
  const server = spawn(
    "porthold",
    ["run", "--ephemeral", "--name", name, "--", process.execPath, "-e", SERVE_FD3],
    { stdio: "inherit" },
  );
  try {
    porthold("wait", "--name", name, "--timeout", "30s");
    const url = porthold("url", "--name", name);
    const response = await fetch(url);
    assert.equal(await response.text(), "hello from porthold");
  } finally {
    server.kill("SIGTERM");
    await once(server, "exit");
  }
});

test("a picked port is free for a server that binds it", async () => {
  // The lease belongs to this test process; it is released below, and
  // would be reclaimable anyway once this process has exited.
  const port = Number(porthold("pick", "--owner-pid", String(process.pid)));
  const server = http.createServer((req, res) => res.end("bound by node"));
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  try {
    const response = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(await response.text(), "bound by node");
  } finally {
    server.close();
    await once(server, "close");
    porthold("release", "--port", String(port));
  }
});
