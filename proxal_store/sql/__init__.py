"""Session state in SQL (SQLAlchemy Core): the schema, the database and its migrations,
and the queries of one transaction (`sessions.SessionTx`)."""
