"""Kafka connectors: a partitioned source with offsets in the manifest (``source``)."""
