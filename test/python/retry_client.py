"""A Python client of moeflash that lets gRPC itself retry: the channel carries the service config published in
deploy/client/service-config.json (retry on UNAVAILABLE and RESOURCE_EXHAUSTED), so a call the router refuses is
tried again after the delay the router sends in grpc-retry-pushback-ms. Prints one JSON line: the call's status and
the tokens it received.

usage: retry_client.py STUBS_DIR ADDRESS MODEL SERVICE_CONFIG
"""
import json
import sys


def main() -> int:
    stubs, address, model, service_config = sys.argv[1:5]
    sys.path.insert(0, stubs)
    import grpc
    from moeflash.v1 import generation_pb2, generation_pb2_grpc

    with open(service_config, encoding="utf-8") as f:
        config = json.dumps(json.load(f))
    options = [("grpc.service_config", config), ("grpc.enable_retries", 1)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        request = generation_pb2.GenerateRequest(model=model, prompt="retried", max_tokens=3)
        tokens = []
        try:
            for response in stub.Generate(request, timeout=30):
                if response.WhichOneof("event") == "chunk":
                    tokens += list(response.chunk.token_ids)
            print(json.dumps({"code": "OK", "tokens": len(tokens)}))
        except grpc.RpcError as err:
            print(json.dumps({"code": err.code().name, "tokens": len(tokens), "details": err.details()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
