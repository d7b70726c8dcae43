"""Print what a read_committed consumer sees in a topic.

    python examples/kafka/read.py BROKER TOPIC
"""

import json
import sys

from confluent_kafka import Consumer, TopicPartition

broker, topic = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": broker, "group.id": "kafka_example_reader",
              "isolation.level": "read_committed", "enable.partition.eof": True})
parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
c.assign([TopicPartition(topic, p, 0) for p in parts])
ended, rows = set(), []
while len(ended) < len(parts):
    for m in c.consume(1000, 1.0):
        if m.error() is None:
            rows.append(json.loads(m.value()))
        else:
            ended.add(m.partition())
c.close()
for r in sorted(rows, key=lambda r: (str(r.get("window_start")), r.get("key"))):
    print(json.dumps(r))
print(f"{len(rows)} records in {topic!r}", file=sys.stderr)
