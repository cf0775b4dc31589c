"""The event log's readers and consumers in capture: SubscribeEvents streams (`stream`),
webhook fan-out and delivery (`webhooks`), shopper notifications (`notifications`), and the
one gRPC servicer over them (`servicer`). The log itself is written and sequenced by the store
(`services.capture.store.events`)."""
