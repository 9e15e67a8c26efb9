-- The metrics scope (security review, finding 8: /metrics needs a token). SQLite flavour; keep in
-- step with ../postgres/0013_metrics_scope.sql.
-- A token that carried every operator scope (the bootstrap admin token among them) keeps
-- carrying every operator scope, so after an upgrade an admin can still make a token for the
-- scraper: a token can only grant scopes it has.
UPDATE api_tokens SET scopes = scopes || ',metrics'
 WHERE scopes = 'read,create,update,delete,admin,export-key';
