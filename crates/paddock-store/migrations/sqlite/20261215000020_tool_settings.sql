-- Tool settings (spec §13.2): whether a tool is enabled, per deployment, kept by the
-- model-facing name so a setting survives replacing `mcp_servers` and applies again when the
-- tool reappears. A tool without a row is enabled. Runs copy the disabled names into their
-- config when they start (`runs.config.disabled_tools`), so a later change never reaches them.
CREATE TABLE tool_settings (
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, name)
);
