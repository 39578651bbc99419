"""HTTPJudge against a real chat-completions server on 127.0.0.1, and the reply parsers it uses.

The server (http.server in a thread, ephemeral port) records every request and answers as each test
tells it: a status, a JSON body or raw bytes, an optional delay.
"""

import base64
import http.server
import io
import json
import threading
import time

import numpy as np
import PIL.Image
import pytest

from taskmem_jax.processing.video import VideoClip
from taskmem_jax.rewards import judge_prompts as P
from taskmem_jax.rewards.http import HTTPJudge
from taskmem_jax.rewards.judge import WindowContext
from taskmem_jax.rewards.task_judge import TIE, TaskJudge, both_orders


def completion(content, finish_reason="stop", **message):
  return {"id": "x", "object": "chat.completion",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                       "finish_reason": finish_reason}]}


class ChatServer:
  """respond(body: dict, n: int) -> (status, reply: dict | bytes, delay_s); n counts requests from 0."""

  def __init__(self):
    self.requests, self.lock = [], threading.Lock()
    self.respond = lambda body, n: (200, completion("1"), 0.0)
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
          n = len(server.requests)
          server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "body": body})
        status, reply, delay = server.respond(body, n)
        time.sleep(delay)
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        try:
          self.send_response(status)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(data)))
          self.end_headers()
          self.wfile.write(data)
        except OSError:  # the client gave up (timeout test)
          pass

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.httpd.block_on_close = False
    self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
    self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def server():
  s = ChatServer()
  yield s
  s.close()


@pytest.fixture
def judge_for(server, monkeypatch):
  monkeypatch.setenv("TEST_JUDGE_KEY", "secret-123")

  def make(**kwargs):
    kwargs = {"timeout_s": 2.0, "max_retries": 2, **kwargs}
    return HTTPJudge(server.base_url, "judge-model", "TEST_JUDGE_KEY", **kwargs)
  return make


def user_text(body) -> str:
  content = body["messages"][0]["content"]
  return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def window(video=None) -> WindowContext:
  return WindowContext(clip=3, start=0.0, end=4.0, previous=("person 1 enters.", "person 2 sits."), video=video)


def clip(frames=6, h=24, w=40) -> VideoClip:
  rng = np.random.default_rng(0)
  return VideoClip(rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8), np.arange(frames) * 4, 4.0, 0.0,
                   frames, 0)


# --- success ----------------------------------------------------------------------------------------

def test_verdicts_keep_order_and_the_request_is_a_chat_completion(server, judge_for):
  # "good" candidates pass; earlier ones answer later, so replies arrive out of order.
  def respond(body, n):
    text = user_text(body)
    index = int(text.split("candidate #")[1][0])
    return 200, completion("1" if "good" in text.split("[Candidate description]:")[1] else "0"), 0.05 * (3 - index)
  server.respond = respond
  judge = judge_for(num_frames=4, concurrency=4, temperature=1e-6)
  descriptions = ["candidate #0 good", "candidate #1 bad", "candidate #2 good", "candidate #3 bad"]
  verdicts = judge.faithfulness(window(clip()), descriptions)
  assert [v.ok for v in verdicts] == [True, False, True, False]
  assert len(server.requests) == 4
  request = server.requests[0]
  assert request["path"] == "/v1/chat/completions"
  assert request["headers"]["authorization"] == "Bearer secret-123"
  assert request["headers"]["content-type"] == "application/json"
  body = request["body"]
  assert body["model"] == "judge-model" and body["temperature"] == 1e-6 and set(body) == {"model", "messages",
                                                                                          "temperature"}
  parts = body["messages"][0]["content"]
  assert body["messages"][0]["role"] == "user" and len(body["messages"]) == 1
  images = [p for p in parts if p["type"] == "image_url"]
  assert len(images) == 4
  url = images[0]["image_url"]["url"]
  assert url.startswith("data:image/jpeg;base64,")
  image = PIL.Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
  assert image.size == (40, 24) and image.format == "JPEG"
  # The frames sit between the intro and the question; the first is the window's start.
  assert parts[0]["text"] == P.FAITHFULNESS_INTRO and parts[1]["text"] == "Frame at 0.0 s:"
  assert "person 1 enters. person 2 sits." in parts[-1]["text"] and P.FAITHFULNESS_TASK in parts[-1]["text"]


def test_png_frames_are_scaled_to_max_side(server, judge_for):
  judge = judge_for(num_frames=2, image_format="png", max_side=20)
  assert judge.faithfulness(window(clip()), ["x"])[0].ok is True
  images = [p for p in server.requests[0]["body"]["messages"][0]["content"] if p["type"] == "image_url"]
  assert len(images) == 2 and images[1]["image_url"]["url"].startswith("data:image/png;base64,")
  image = PIL.Image.open(io.BytesIO(base64.b64decode(images[1]["image_url"]["url"].split(",", 1)[1])))
  assert max(image.size) == 20


def test_text_judge_sends_no_images(server, judge_for):
  server.respond = lambda body, n: (200, completion("Answer: 0"), 0.0)
  verdicts = judge_for().non_redundancy(window(), ["person 2 sits again."])
  assert verdicts[0].ok is False
  content = server.requests[0]["body"]["messages"][0]["content"]
  assert isinstance(content, str) and "[Candidate description]:\nperson 2 sits again." in content


def test_ranking_is_parsed_into_indices(server, judge_for):
  server.respond = lambda body, n: (200, completion("<think>2 adds most</think>[RANK START] 2, 3, 1 [RANK END]"), 0)
  ranking = judge_for().rank(window(), ["a", "b", "c"])
  assert ranking.order == (1, 2, 0) and not ranking.failed
  text = user_text(server.requests[0]["body"])
  assert "Candidate 1: a\nCandidate 2: b\nCandidate 3: c" in text and P.RANK_START in text
  assert judge_for().rank(window(), ["only"]).order == (0,) and len(server.requests) == 1  # no call for one


def test_video_from_path(server, judge_for, tmp_path):
  from taskmem_jax.processing.video_io import write_video
  path = str(tmp_path / "w.mp4")
  write_video(path, np.full((16, 32, 32, 3), 120, np.uint8), 4.0)
  ctx = WindowContext(clip=0, start=1.0, end=3.0, video_path=path)
  assert judge_for(num_frames=3).faithfulness(ctx, ["x"])[0].ok is True
  parts = server.requests[0]["body"]["messages"][0]["content"]
  assert sum(p["type"] == "image_url" for p in parts) == 3 and parts[1]["text"] == "Frame at 0.0 s:"


# --- failures -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,reason", [
    (b"not json{", "malformed JSON"),
    ({"choices": []}, "no choices"),
    ({"error": "x"}, "no choices"),
    (completion(None, refusal="I can't help with that."), "refusal: \"I can't help"),
    (completion("", finish_reason="content_filter"), "content_filter"),
    (completion(""), "empty content"),
    (completion("It might be accurate."), "not parseable"),
])
def test_malformed_replies_fail_with_a_reason(server, judge_for, reply, reason):
  server.respond = lambda body, n: (200, reply, 0.0)
  verdict = judge_for().non_redundancy(window(), ["x"])[0]
  assert verdict.failed and reason in verdict.reason
  assert len(server.requests) == 1  # a bad reply is not retried


@pytest.mark.parametrize("reply,reason", [
    ("2, 1, 3", "no [RANK START]"), ("[RANK START] 2, 1 [RANK END]", "exactly once"),
    ("[RANK START] 1, 1, 2 [RANK END]", "exactly once"), ("[RANK START] 1, 4, 2 [RANK END]", "unknown"),
])
def test_bad_rankings_fail(server, judge_for, reply, reason):
  server.respond = lambda body, n: (200, completion(reply), 0.0)
  ranking = judge_for().rank(window(), ["a", "b", "c"])
  assert ranking.failed and reason in ranking.reason


def test_timeout_is_retried_then_fails(server, judge_for):
  server.respond = lambda body, n: (200, completion("1"), 0.6)
  tic = time.perf_counter()
  verdict = judge_for(timeout_s=0.2, max_retries=1).non_redundancy(window(), ["x"])[0]
  assert verdict.failed and "timeout after 0.2 s (after 2 attempts)" in verdict.reason
  assert len(server.requests) == 2 and time.perf_counter() - tic < 1.5


def test_server_error_then_success(server, judge_for):
  server.respond = lambda body, n: (500, {"error": "overloaded"}, 0.0) if n < 2 else (200, completion("1"), 0.0)
  assert judge_for(max_retries=2).non_redundancy(window(), ["x"])[0].ok is True
  assert len(server.requests) == 3


def test_retries_are_bounded(server, judge_for):
  server.respond = lambda body, n: (503, {"error": "down"}, 0.0)
  verdict = judge_for(max_retries=2).non_redundancy(window(), ["x"])[0]
  assert verdict.failed and "HTTP 503" in verdict.reason and "after 3 attempts" in verdict.reason
  assert len(server.requests) == 3


def test_rate_limit_is_retried(server, judge_for):
  server.respond = lambda body, n: (429, {"error": "slow down"}, 0.0) if n == 0 else (200, completion("0"), 0.0)
  assert judge_for().non_redundancy(window(), ["x"])[0].ok is False
  assert len(server.requests) == 2


def test_unauthorized_is_not_retried(server, judge_for):
  server.respond = lambda body, n: (401, {"error": "bad key"}, 0.0)
  verdict = judge_for(max_retries=3).non_redundancy(window(), ["x"])[0]
  assert verdict.failed and verdict.reason.startswith("HTTP 401") and "bad key" in verdict.reason
  assert len(server.requests) == 1


def test_connection_refused(monkeypatch):
  probe = ChatServer()
  url = probe.base_url
  probe.close()  # nothing listens on that port now
  judge = HTTPJudge(url, "m", api_key_env=None, max_retries=1, timeout_s=1.0)
  verdict = judge.non_redundancy(window(), ["x"])[0]
  assert verdict.failed and "connection error" in verdict.reason and "after 2 attempts" in verdict.reason


def test_a_bad_context_fails_the_verdicts_without_raising(server, judge_for):
  ctx = WindowContext(clip=0, start=0.0, end=2.0, previous=(3,), video=clip())  # not a string
  verdicts = judge_for().faithfulness(ctx, ["a", "b"]) + judge_for().non_redundancy(ctx, ["a"])
  assert all(v.failed and v.reason.startswith("TypeError") for v in verdicts) and not server.requests
  # The ranking prompt holds the candidates alone (ranked against each other): the bad preceding text is not read.
  assert "TypeError" not in (judge_for().rank(ctx, ["a", "b"]).reason or "")


def test_a_video_judge_without_video_fails_without_calling(server, judge_for):
  verdicts = judge_for().faithfulness(window(), ["a", "b"])
  assert all(v.failed and "neither video frames" in v.reason for v in verdicts) and not server.requests


def test_no_key_sends_no_authorization(server):
  assert HTTPJudge(server.base_url, "m", api_key_env=None).non_redundancy(window(), ["x"])[0].ok is True
  assert "authorization" not in server.requests[0]["headers"]


@pytest.mark.parametrize("kwargs,match", [
    ({"base_url": "localhost:8000"}, "base_url"), ({"model": ""}, "model"), ({"timeout_s": 0}, "timeout_s"),
    ({"max_retries": -1}, "max_retries"), ({"extra_body": {"model": "x"}}, "extra_body sets \\['model'\\]"), ({"num_frames": 0}, "num_frames"),
    ({"image_format": "gif"}, "image_format"), ({"api_key_env": "TEST_JUDGE_UNSET_VAR"}, "TEST_JUDGE_UNSET_VAR"),
])
def test_bad_arguments(kwargs, match, monkeypatch):
  monkeypatch.delenv("TEST_JUDGE_UNSET_VAR", raising=False)
  args = {"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": None, **kwargs}
  with pytest.raises(ValueError, match=match):
    HTTPJudge(**args)


def test_repr_hides_the_key(judge_for):
  assert "secret" not in repr(judge_for())


# --- task preferences (Phase Two) ---------------------------------------------------------------------

QUESTIONS = ["How many cups are on the table?", "What colour is the cup that falls?"]


def memories(body) -> dict:
  """The {"0": ..., "1": ...} object of a task prompt, as the judge was shown it."""
  text = user_text(body)
  start = text.index("[Memories]:\n") + len("[Memories]:\n")
  return json.JSONDecoder().raw_decode(text, start)[0]


def preference_reply(more_useful, rationale="because"):
  return completion(json.dumps({"more_useful": more_useful, "rationale": rationale}))


@pytest.mark.parametrize("reply,winner", [
    (preference_reply(0), 0), (preference_reply(1), 1), (preference_reply(-1), TIE),
    (completion('Here you go:\n```json\n{"more_useful": "1", "rationale": "counts cups"}\n```'), 1),
])
def test_preference_is_parsed(server, judge_for, reply, winner):
  server.respond = lambda body, n: (200, reply, 0.0)
  judge = judge_for(temperature=1e-6)
  assert isinstance(judge, TaskJudge)
  preference = judge.prefer(QUESTIONS, "two cups. a red cup falls.", "person 1 sits.")
  assert preference.winner == winner and preference.reason in ("because", "counts cups")
  body = server.requests[0]["body"]
  assert len(server.requests) == 1 and body["temperature"] == 1e-6 and isinstance(body["messages"][0]["content"], str)
  text = user_text(body)
  assert "1. How many cups are on the table?\n2. What colour is the cup that falls?" in text
  assert memories(body) == {"0": "two cups. a red cup falls.", "1": "person 1 sits."} and '"more_useful"' in text
  assert text.index('"0"') < text.index('"1"')


def test_preferences_keep_the_pairs_order(server, judge_for):
  # The judge prefers the memory containing "good"; earlier pairs answer later, so replies arrive out of order.
  def respond(body, n):
    shown = memories(body)
    return 200, preference_reply(0 if "good" in shown["0"] else 1), 0.05 * (4 - int(shown["0"][-1]))
  server.respond = respond
  pairs = [("good 0", "bad 0"), ("bad 1", "good 1"), ("bad 2", "good 2"), ("good 3", "bad 3")]
  preferences = judge_for(concurrency=4).prefer_many(QUESTIONS, pairs)
  assert [p.winner for p in preferences] == [0, 1, 1, 0] and len(server.requests) == 4


@pytest.mark.parametrize("content,reason", [
    ('{"more_useful": 1, "rationale": "x"', "not parseable as a preference (no JSON object)"),
    ('{"winner": 1}', "not parseable as a preference (JSON object(s) without more_useful)"),
    ("Memory 1 is better.", "not parseable as a preference"),
    ('{"more_useful": 2, "rationale": "x"}', "more_useful=2 out of range"),
    ('{"more_useful": "first"}', "more_useful='first' out of range"),
    ('{"more_useful": true}', "more_useful=True out of range"),
])
def test_bad_preference_replies_fail(server, judge_for, content, reason):
  server.respond = lambda body, n: (200, completion(content), 0.0)
  preference = judge_for().prefer(QUESTIONS, "a", "b")
  assert preference.failed and reason in preference.reason and len(server.requests) == 1


def test_preference_failures_reuse_the_call_machinery(server, judge_for):
  server.respond = lambda body, n: (500, {"error": "overloaded"}, 0.0) if n == 0 else (200, preference_reply(1), 0)
  assert judge_for(max_retries=1).prefer(QUESTIONS, "a", "b").winner == 1 and len(server.requests) == 2
  server.respond = lambda body, n: (200, preference_reply(1), 0.6)
  preference = judge_for(timeout_s=0.2, max_retries=0).prefer(QUESTIONS, "a", "b")
  assert preference.failed and "timeout after 0.2 s (after 1 attempts)" in preference.reason
  bad = judge_for().prefer_many(QUESTIONS, [("a", None)])  # fails that pair without a request
  assert bad[0].failed and bad[0].reason.startswith("TypeError") and len(server.requests) == 3
  with pytest.raises(ValueError, match="1 to 5"):
    judge_for().prefer_many([], [("a", "b")])


def test_both_orders_over_the_server(server, judge_for):
  # A judge that prefers the longer memory, except that pair (c, d) always gets "0" (position bias)
  # and pair (e, f) is a tie.
  def respond(body, n):
    shown = memories(body)
    if {shown["0"], shown["1"]} == {"c", "dd"}:
      return 200, preference_reply(0), 0.0
    if {shown["0"], shown["1"]} == {"e", "f"}:
      return 200, preference_reply(-1), 0.0
    return 200, preference_reply(int(len(shown["1"]) > len(shown["0"]))), 0.0
  server.respond = respond
  got = both_orders(judge_for(), QUESTIONS, [("aaa", "b"), ("x", "yy"), ("c", "dd"), ("e", "f")])
  assert [p.winner for p in got] == [0, 1, None, None]
  assert [p.reason for p in got[2:]] == ["the two orders disagree", "tie"] and len(server.requests) == 8


# --- parsers (judge_prompts) --------------------------------------------------------------------------

@pytest.mark.parametrize("reply,ok", [
    ("1", True), ("0", False), (" 1.\n", True), ("Answer: 0", False), ('"1"', True), ("```\n1\n```", True),
    ("**1**", True), ("**Answer:** 0", False), ('{"label": 1}', True), ('```json\n{"label": "0"}\n```', False), ("<think>maybe 0</think>1", True),
    ("The candidate repeats a fact.\nLabel: 0", False), ("yes", None), ("10", None), ("0 or 1", None), ("", None),
    ('{"label": 2}', None),
])
def test_parse_verdict(reply, ok):
  verdict = P.parse_verdict(reply)
  assert verdict.ok is ok
  if ok is None:
    assert "not parseable" in verdict.reason


def test_parse_ranking_and_labels():
  assert P.parse_ranking("[RANK START] 3, 1, 2 [RANK END]", 3).order == (2, 0, 1)
  assert P.parse_ranking("[RANK START]\nCandidate 2\nCandidate 1\n[RANK END]", 2).order == (1, 0)
  assert P.parse_ranking("[RANK START] b, A, c [RANK END]", 3).failed  # three candidates use digits
  assert P.rank_labels(3) == ("1", "2", "3") and P.rank_labels(10)[-1] == "J"
  assert P.parse_ranking("[RANK START] " + ", ".join("JIHGFEDCBA") + " [RANK END]", 10).order == tuple(range(9, -1, -1))
  with pytest.raises(ValueError, match="at most 26"):
    P.rank_labels(27)
  assert "for example: [RANK START] 2, 3, 1 [RANK END]" in P.ranking_prompt(["a", "b", "c"])
  assert "(empty)" in P.non_redundancy_prompt([], "x")


@pytest.mark.parametrize("reply,winner", [
    ('{"more_useful": 0, "rationale": "r"}', 0), ("1", 1), ("**-1**", TIE), ('{"more_useful": 1.0}', 1),
    ('<think>{"more_useful": 0}</think>\n{"more_useful": 1}', 1), ('{"a": {"more_useful": -1}}', TIE),
    ('Reasoning.\n{"more_useful": 1}\nFinal: {"more_useful": 0}', 0), ("2", None), ("", None), (None, None),
])
def test_parse_preference(reply, winner):
  preference = P.parse_preference(reply)
  assert preference.winner == winner
  if winner is None:
    assert "not parseable" in preference.reason
