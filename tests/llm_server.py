"""A real OpenAI-compatible HTTP server on loopback with scripted replies, for client tests.

The behaviour for a request is chosen by a tag in its last message: ``[ok]``,
``[malformed-once]``, ``[429-once]``, ``[500]``, ``[invalid]``; anything else
gets the reply function's answer. Every request is counted per tag.
"""

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD_QA = {
    "questions": [
        {"type": "yes-no", "question": "Is the image blurry?", "answer": "Yes", "options": ["Yes", "No"]},
        {"type": "yes-no", "question": "Is there snow in the image?", "answer": "No", "options": ["Yes", "No"]},
        {"type": "what", "question": "What is the main distortion?", "answer": "blur",
         "options": ["blur", "noise", "overexposure", "compression artifacts"]},
        {"type": "how", "question": "How is the overall quality?", "answer": "poor",
         "options": ["poor", "good", "excellent", "fair"]},
    ],
    "conversation": [["Why is it blurry?", "The camera moved during the exposure."],
                     ["How can I avoid it?", "Use a faster shutter speed or a tripod."]],
}
INVALID_QA = {**GOOD_QA, "questions": [{**GOOD_QA["questions"][2], "answer": "haze"}]}
TAGS = ("[ok]", "[malformed-once]", "[429-once]", "[500]", "[invalid]")


class ScriptedLLM:
    def __init__(self, reply=None):
        self.calls = Counter()
        self.reply = reply  # optional function(request_json) -> str for untagged requests
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                if isinstance(text, list):
                    text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
                tag = next((t for t in TAGS if t in text), "other")
                with outer._lock:
                    outer.calls[tag] += 1
                    n = outer.calls[tag]
                if tag == "[500]":
                    return self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
                if tag == "[429-once]" and n == 1:
                    return self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}},
                                      {"retry-after-ms": "10"})
                if tag == "[malformed-once]" and n == 1:
                    content = "Sure! Here are some questions: {not json"
                elif tag == "[invalid]":
                    content = json.dumps(INVALID_QA)
                elif tag == "other" and outer.reply is not None:
                    content = outer.reply(body)
                else:
                    content = json.dumps(GOOD_QA)
                self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _send(self, code, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
