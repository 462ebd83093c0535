-- The peer's viewer (bench/README.md, "PostGraphile"): created by `python -m bench.run`
-- before PostGraphile starts and dropped after it, never by marketgraph's migrations.
-- PostGraphile verifies the bearer token (HS256) and sets its claims as
-- `jwt.claims.*` for the transaction; viewer() is the signed-in user's row.
CREATE SCHEMA IF NOT EXISTS postgraphile_bench;

CREATE OR REPLACE FUNCTION postgraphile_bench.viewer() RETURNS kg_auth.users
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT * FROM kg_auth.users
  WHERE id = nullif(current_setting('jwt.claims.sub', true), '')::uuid
$$;

COMMENT ON FUNCTION postgraphile_bench.viewer() IS 'The user of the bearer token (its sub).';
