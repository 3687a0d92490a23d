-- A deployment later fixed forward (a new deployment shipped to repair it) is a change failure.
ALTER TABLE deployments ADD COLUMN fixed_by BIGINT;
