"""Kafka connectors: a partitioned source with offsets in the manifest (``source``) and an
exactly-once sink that stages each epoch and copies it in one transaction (``sink``)."""
