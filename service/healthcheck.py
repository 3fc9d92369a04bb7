"""`python -m service.healthcheck [HOST:PORT]`: exit 0 when the server's health is SERVING, else 1.

For container HEALTHCHECKs and scripts that wait for `tribind serve` (no grpcurl needed).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else os.environ.get("TRIBIND_SERVER", "127.0.0.1:50051")
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tribind.v1.Tribind"), timeout=5.0)
    except grpc.RpcError as exc:
        print(f"{target}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
