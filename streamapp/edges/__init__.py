"""Programs at the edges of the service, apart from the worker: load (the hive2mafka job),
send / tail / ask (clients), sink (results into a database), the JSON Schemas of the
messages. May import streamapp.records and settings; never the pipeline or the model."""
