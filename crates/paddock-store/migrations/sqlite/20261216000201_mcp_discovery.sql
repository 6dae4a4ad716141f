-- MCP discovery (spec §13.2): the tools each MCP server of a deployment listed the last time
-- they were asked (at a run start, or `GET …/tools?refresh=true`), so the Tools API can list
-- them without contacting the servers, across restarts. One row per deployment, replaced whole
-- by each discovery: `servers` is a JSON object, server name → array of
-- `{"name", "description", "destructive"}` as the server reported them; a server that could
-- not be reached is absent (it adds no tools).
CREATE TABLE mcp_discoveries (
    deployment_id TEXT PRIMARY KEY REFERENCES deployments(id) ON DELETE CASCADE,
    servers TEXT NOT NULL,
    discovered_at INTEGER NOT NULL
);
