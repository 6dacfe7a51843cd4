"""Real servers the tests run against: Synapse, an OTLP receiver, OpenBao with a PKI, and a
TLS relay."""
