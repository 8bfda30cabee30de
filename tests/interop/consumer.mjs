// A consumer of tradevine.events written in another language, configured only by docs/asyncapi.yaml.
//
// It reads from the AsyncAPI document: the exchange (the channels' AMQP bindings), the routing keys (every
// channel with `is: routingKey`), each key's messageType, the header names (the messages' headers schema)
// and the AMQP properties (`x-amqp-properties`). It binds its own exclusive, server-named queue to every
// documented routing key and prints one JSON line per message, with what the document says it should be
// and what did not match ("problems"). GATEWAY_EXCHANGE overrides the documented exchange name, as it does
// for the project's own consumers.
//
//   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ node consumer.mjs [docs/asyncapi.yaml]
//
// First line: {"ready": true, "exchange": ..., "queue": ..., "routingKeys": [...], "headers": [...]}.
// SIGTERM or SIGINT closes the connection and exits 0.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import amqplib from "amqplib";
import YAML from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const documentPath = resolve(process.argv[2] ?? resolve(here, "../../docs/asyncapi.yaml"));
const doc = YAML.parse(readFileSync(documentPath, "utf8"));

function deref(node) {
  // Local references only (`#/components/...`), which is all the document uses.
  let seen = 0;
  while (node && typeof node.$ref === "string") {
    if (!node.$ref.startsWith("#/") || ++seen > 16) throw new Error(`cannot resolve ${node.$ref}`);
    node = node.$ref.slice(2).split("/").reduce((at, part) => at?.[part.replaceAll("~1", "/").replaceAll("~0", "~")], doc);
  }
  if (node === undefined) throw new Error("dangling $ref");
  return node;
}

// routing key -> { messageType, headers: {name: schema}, required: [...], properties: {...} }
const routes = new Map();
const exchanges = new Set();
for (const channel of Object.values(doc.channels)) {
  const amqp = channel.bindings?.amqp;
  if (amqp?.is !== "routingKey") continue;
  exchanges.add(amqp.exchange.name);
  for (const ref of Object.values(channel.messages)) {
    const message = deref(ref);
    const headers = deref(message.headers);
    routes.set(channel.address, {
      messageType: message.bindings.amqp.messageType,
      contentType: message.contentType ?? doc.defaultContentType,
      headers: headers.properties,
      required: headers.required ?? [],
      properties: message["x-amqp-properties"],
    });
  }
}
if (exchanges.size !== 1) throw new Error(`expected one documented exchange, found ${[...exchanges]}`);
const documentedExchange = [...exchanges][0];
const exchange = process.env.GATEWAY_EXCHANGE || documentedExchange;

function problemsOf(routingKey, props, headers) {
  const route = routes.get(routingKey);
  if (!route) return [`routing key ${routingKey} is not documented`];
  const problems = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith("x-")) continue; // broker bookkeeping (x-death ...)
    const schema = route.headers[name];
    if (!schema) problems.push(`header ${name} is not documented`);
    else if (schema.type === "string" && typeof value !== "string") {
      problems.push(`header ${name} is ${typeof value}, documented as string`);
    } else if (schema.enum && !schema.enum.includes(value)) problems.push(`header ${name}=${value} not in ${schema.enum}`);
  }
  for (const name of route.required) if (!(name in headers)) problems.push(`required header ${name} missing`);
  if (props.type !== route.messageType) problems.push(`type ${props.type} != messageType ${route.messageType}`);
  if (props.contentType !== route.contentType) problems.push(`content_type ${props.contentType} != ${route.contentType}`);
  const p = route.properties;
  if (p.delivery_mode?.const !== undefined && props.deliveryMode !== p.delivery_mode.const) {
    problems.push(`delivery_mode ${props.deliveryMode} != ${p.delivery_mode.const}`);
  }
  if (p.app_id?.const !== undefined && props.appId !== p.app_id.const) problems.push(`app_id ${props.appId} != ${p.app_id.const}`);
  if (p.message_id?.pattern && !new RegExp(p.message_id.pattern).test(props.messageId ?? "")) {
    problems.push(`message_id ${props.messageId} does not match ${p.message_id.pattern}`);
  }
  if (p.timestamp && !Number.isInteger(props.timestamp)) problems.push(`timestamp ${props.timestamp} is not an integer`);
  return problems;
}

const out = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);

const connection = await amqplib.connect(process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672/");
const channel = await connection.createChannel();
await channel.checkExchange(exchange); // the gateway declares it
const { queue } = await channel.assertQueue("", { exclusive: true, durable: false, autoDelete: true });
for (const key of routes.keys()) await channel.bindQueue(queue, exchange, key);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await connection.close().catch(() => {});
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

await channel.consume(queue, (msg) => {
  if (msg === null) return;
  const props = msg.properties;
  const headers = props.headers ?? {};
  out({
    routingKey: msg.fields.routingKey,
    exchange: msg.fields.exchange,
    properties: {
      messageId: props.messageId, type: props.type, appId: props.appId, contentType: props.contentType,
      deliveryMode: props.deliveryMode, timestamp: props.timestamp,
    },
    headers,
    headerTypes: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, typeof v])),
    bodySha256: createHash("sha256").update(msg.content).digest("hex"),
    body: msg.content.toString("utf8"),
    problems: problemsOf(msg.fields.routingKey, props, headers),
  });
  channel.ack(msg);
});

out({
  ready: true, document: documentPath, documentedExchange, exchange, queue, routingKeys: [...routes.keys()],
  headers: [...new Set([...routes.values()].flatMap((r) => Object.keys(r.headers)))],
});
