#!/usr/bin/env node
/*
 * PostGraphile v4 as the benchmark's peer (bench/README.md, "PostGraphile"):
 * the kg market's two stores (kg_auth, kg_app) and postgraphile_bench.viewer()
 * over the benchmark database, read-only, on a plain Node http server.
 *
 *   DATABASE_URL=postgresql://... JWT_SECRET=... node server.js --port 8080
 *
 * Environment: DATABASE_URL (required), JWT_SECRET (required: bearer tokens are
 * verified, HS256, audience and issuer below), PORT (or --port), HOST
 * (127.0.0.1), PG_POOL_MAX (20: the same ceiling as the floor's pool and the
 * server's 5 + 15). GET /health answers 200 once the schema is built; the
 * server listens only from then on.
 */
'use strict';

const http = require('http');
const path = require('path');
const { postgraphile } = require('postgraphile');
const { makePgSmartTagsFromFilePlugin } = require('postgraphile/plugins');
const PgSimplifyInflectorPlugin = require('@graphile-contrib/pg-simplify-inflector');

const SCHEMAS = ['kg_auth', 'kg_app', 'postgraphile_bench'];
const JWT_AUDIENCE = 'postgraphile-bench';
const JWT_ISSUER = 'marketgraph-bench';

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1];
  return process.env[name.toUpperCase()] || fallback;
}

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(option('port', '5000'));
const host = option('host', '127.0.0.1');

const middleware = postgraphile(
  {
    connectionString: required('DATABASE_URL'),
    max: Number(process.env.PG_POOL_MAX || 20),
    idleTimeoutMillis: 0, // keep idle connections, as the server's pool does
  },
  SCHEMAS,
  {
    appendPlugins: [
      PgSimplifyInflectorPlugin,
      // Cross-schema relations (no foreign keys between stores) and what is not served.
      makePgSmartTagsFromFilePlugin(path.join(__dirname, 'postgraphile.tags.json5')),
    ],
    jwtSecret: required('JWT_SECRET'),
    jwtVerifyOptions: { algorithms: ['HS256'], audience: JWT_AUDIENCE, issuer: JWT_ISSUER },
    disableDefaultMutations: true,
    dynamicJson: true,
    setofFunctionsContainNodes: true,
    simpleCollections: 'both', // lists where marketgraph has lists, connections where it pages
    legacyRelations: 'omit',
    ignoreRBAC: false,
    graphiql: false,
    watchPg: false,
    disableQueryLog: true,
    enableQueryBatching: false,
    showErrorStack: false,
    retryOnInitFail: false,
  },
);

let ready = false;

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(ready ? 200 : 503, { 'Content-Type': 'text/plain' });
    res.end(ready ? 'ok' : 'starting');
    return;
  }
  middleware(req, res);
});
server.keepAliveTimeout = 75_000; // wrk holds its connections for the whole cell

middleware
  .getGraphQLSchema()
  .then(() => {
    ready = true;
    server.listen(port, host);
  })
  .catch((error) => {
    console.error(`PostGraphile could not build its schema: ${error.stack || error}`);
    process.exit(1);
  });

function stop() {
  server.close();
  middleware.release().finally(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
