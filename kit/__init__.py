"""What the tests and the bench both drive the product with: client peers, the OpenAI-protocol
stand-in, synthetic speech, uplink impairment and word-error scoring. Never imports `tests` or `bench`."""
