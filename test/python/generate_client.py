"""A Python client of moeflash built only from proto/: streams one Generate call through the router and prints
one JSON line per response message, then shows that error details (google.rpc.BadRequest) are readable too.

usage: generate_client.py STUBS_DIR ADDRESS MODEL PROMPT MAX_TOKENS SEED
"""
import json
import sys


def main() -> int:
    stubs, address, model, prompt, max_tokens, seed = sys.argv[1:7]
    sys.path.insert(0, stubs)
    import grpc
    from google.rpc import error_details_pb2, status_pb2
    from moeflash.v1 import generation_pb2, generation_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        request = generation_pb2.GenerateRequest(model=model, prompt=prompt, max_tokens=int(max_tokens))
        # Explicit presence: temperature 0 (greedy) is sent, not mistaken for "unset".
        request.sampling.temperature = 0.0
        request.sampling.seed = int(seed)
        for response in stub.Generate(request, timeout=30):
            if response.WhichOneof("event") == "chunk":
                chunk = response.chunk
                print(json.dumps({"chunk": {"token_ids": list(chunk.token_ids), "text": chunk.text,
                                            "completion_tokens": chunk.usage.completion_tokens}}))
            else:
                complete = response.complete
                print(json.dumps({"complete": {
                    "finish_reason": generation_pb2.FinishReason.Name(complete.finish_reason),
                    "prompt_tokens": complete.usage.prompt_tokens,
                    "completion_tokens": complete.usage.completion_tokens,
                }}))

        bad = generation_pb2.GenerateRequest(model=model, prompt=prompt)
        bad.sampling.temperature = -1.0
        try:
            for _ in stub.Generate(bad, timeout=30):
                pass
        except grpc.RpcError as err:
            fields = []
            for key, value in err.trailing_metadata() or ():
                if key == "grpc-status-details-bin":
                    status = status_pb2.Status.FromString(value)
                    for detail in status.details:
                        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                            bad_request = error_details_pb2.BadRequest()
                            detail.Unpack(bad_request)
                            fields += [v.field for v in bad_request.field_violations]
            print(json.dumps({"error": {"code": err.code().name, "fields": fields}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
