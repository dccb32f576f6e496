"""The analytics service: the dataflows' live totals (FACTURATION_TOTAL_5S, FACTURATION_TOTAL_BY_CUSTOMER) as a gRPC
API, read and streamed, for the web console and grpcurl."""
