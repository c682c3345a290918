"""What the vision-language classification pipelines share, whichever API they talk to.

A request is always the same three things: the dataset's defect-free reference image (labelled as
such), the test image aligned to it, and the prompt; the answer is JSON `{label: OK|NOK, reasoning}`.
One module per concern, each imported on its own (this package imports nothing, and none of its
modules imports an SDK, so checking whether a VLM pipeline can run stays light):

- `settings`: `[pipelines.<name>]` options, checked so a typo fails loudly (`VLMSettings`);
- `prompts`: the built-in prompt, prompt files (`#` lines are comments; `<<...>>` marks a template
  gap) and the order of a request's parts (`VLMRequest`);
- `images`: alignment to the reference and the PNG each image is sent as;
- `client`: the one interface a provider implements (`VLMClient`), and the transport's failures
  (`HTTP 503 from <endpoint>`, timeouts, a 200 whose body is not the API's JSON); each request has a
  total deadline (`timeout_s`);
- `retries`: what an HTTP status means, and backoff with jitter on 429/5xx/timeouts, never earlier
  than the server asks;
- `answers`: reading the answer; anything unusable (no JSON, unknown label, refusal) is a failed
  prediction, which is NOK, so a broken answer never passes a part;
- `store`: every request and answer on disk in the cache folder, so a rerun or a resumed run sends
  only the images without an answer;
- `usage`: tokens, cost, attempts and replays per image (`Prediction.usage`);
- `pipeline`: `VLMPipeline`, which puts them together.

The providers are fmtest/pipelines/gemini.py and fmtest/pipelines/openai_vlm.py: each one module
holding its client and its pipelines. A third is one more such module.
"""
