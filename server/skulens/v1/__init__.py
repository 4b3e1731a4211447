"""Code generated from proto/skulens/v1/skulens.proto by `make proto` (grpcio-tools). Do not edit."""
