"""A Python client of moeflash built only from proto/, as a platform team would integrate it: sends chat messages to
the router and checks them against a reference rendering of the model's own chat template (read from the GGUF
file, rendered with Jinja2, as Hugging Face's tokenizers apply chat templates), asks for JSON of a schema and
validates it with jsonschema, and reads top-N log-probabilities. Prints one JSON line with what it found.

usage: chat_client.py STUBS_DIR ADDRESS MODEL GGUF_PATH
"""
import json
import struct
import sys


def gguf_string(path: str, wanted: str) -> str:
    """The string value of metadata key `wanted` in a GGUF file (format v3), read with nothing but struct."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f:
        def u32():
            return struct.unpack("<I", f.read(4))[0]

        def u64():
            return struct.unpack("<Q", f.read(8))[0]

        def string():
            return f.read(u64()).decode("utf-8")

        def skip(kind):
            if kind == 8:
                f.seek(u64(), 1)
            elif kind == 9:
                inner, count = u32(), u64()
                for _ in range(count):
                    skip(inner)
            else:
                f.seek(sizes[kind], 1)

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        u32()  # version
        u64()  # tensors
        for _ in range(u64()):
            key, kind = string(), u32()
            if key == wanted and kind == 8:
                return string()
            skip(kind)
    raise KeyError(wanted)


def main() -> int:
    stubs, address, model, gguf = sys.argv[1:5]
    sys.path.insert(0, stubs)
    import grpc
    import jinja2
    import jsonschema
    from moeflash.v1 import generation_pb2, generation_pb2_grpc

    messages = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "How many apples?"}]
    template = jinja2.Environment().from_string(gguf_string(gguf, "tokenizer.chat_template"))
    reference = template.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer"}, "fruit": {"type": "string", "enum": ["apple", "pear"]}},
        "required": ["count", "fruit"],
        "additionalProperties": False,
    }
    chat = [generation_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    out = {}
    with grpc.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        served = stub.Tokenize(generation_pb2.TokenizeRequest(model=model, messages=chat), timeout=30).token_ids
        expected = stub.Tokenize(generation_pb2.TokenizeRequest(model=model, text=reference, add_special=True, parse_special=True), timeout=30).token_ids
        out["template_matches_reference"] = list(served) == list(expected)
        out["prompt_tokens"] = len(served)

        request = generation_pb2.GenerateRequest(model=model, messages=chat, max_tokens=200, json_schema=json.dumps(schema), top_logprobs=3)
        request.sampling.temperature = 0.7
        request.sampling.seed = 11
        text, tokens, logprobs, prompt_tokens = "", [], [], 0
        for response in stub.Generate(request, timeout=60):
            if response.WhichOneof("event") == "chunk":
                text += response.chunk.text
                tokens += list(response.chunk.token_ids)
                logprobs += list(response.chunk.logprobs)
            else:
                prompt_tokens = response.complete.usage.prompt_tokens
                out["finish_reason"] = generation_pb2.FinishReason.Name(response.complete.finish_reason)
        value = json.loads(text)
        jsonschema.validate(value, schema)  # raises if the output does not match
        out["json_valid"] = True
        out["generate_prompt_tokens"] = prompt_tokens
        out["logprobs_per_token"] = len(logprobs) == len(tokens) and all(lp.token_id == t for lp, t in zip(logprobs, tokens))
        out["top_sizes"] = sorted({len(lp.top) for lp in logprobs})
        out["logprobs_negative"] = all(lp.logprob <= 0 for lp in logprobs)

        try:
            bad = generation_pb2.GenerateRequest(model=model, messages=chat, json_schema="{not json")
            for _ in stub.Generate(bad, timeout=30):
                pass
        except grpc.RpcError as err:
            out["bad_schema"] = err.code().name
            out["bad_schema_names_field"] = "json_schema" in (err.details() or "")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
