"""PostgreSQL connectors: the exactly-once sink (``sink``) and its type mapping (``types``)."""
