"""The publishing service's public module: the one module of `pdo.publishing` other packages may import.

Publishing turns a provider's records (JSON over HTTP, or Avro) into feed records of the dataset's
registered schema and produces them to its feed topic; the gateway hosts it for HTTP ingest and the CLI
for `pdo publish`.
"""

from pdo.publishing.publisher import FeedPublisher, FeedPublishers, PublishReport
from pdo.publishing.record_ids import RecordIdWindow

__all__ = ["FeedPublisher", "FeedPublishers", "PublishReport", "RecordIdWindow"]
