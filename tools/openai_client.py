"""Talk to `vocollama serve` with OpenAI's official Python client: one
answer whole, one streamed (with usage), one with an image sent once through
`/v1/voco` and referred to by key, the models list, and a refused request.
Prints what came back as one JSON object (the server's tests compare it).

    python tools/openai_client.py BASE_URL IMAGE QUESTION   # OPENAI_API_KEY: the server's --api-key
"""

import base64
import json
import sys
import urllib.request

import openai


def main() -> None:
    base, image, question = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base + "/v1", max_retries=0)
    with open(image, "rb") as f:
        url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    model = client.models.list().data[0].id
    content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
    messages = [{"role": "user", "content": content}]

    plain = client.chat.completions.create(model=model, messages=messages, temperature=0)
    out = {
        "model": model,
        "plain": plain.choices[0].message.content,
        "plain_finish": plain.choices[0].finish_reason,
        "plain_usage": plain.usage.model_dump(),
    }

    text, finish, usage = [], None, None
    for chunk in client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    ):
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
    out.update(stream="".join(text), stream_finish=finish, stream_usage=usage)

    # The image sent once: the server's own endpoint, then its key in a chat message.
    request = urllib.request.Request(
        base + "/v1/voco",
        data=json.dumps({"image": url}).encode(),
        headers={"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as r:
        stored = json.load(r)
    by_key = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": stored["url"]}}]
    keyed = client.chat.completions.create(model=model, messages=[{"role": "user", "content": by_key}])
    out["by_key"] = keyed.choices[0].message.content

    try:
        client.chat.completions.create(model=model, messages=messages, n=2)
        out["refused"] = None
    except openai.BadRequestError as e:
        out["refused"] = {"status": e.status_code, "param": e.param, "code": e.code}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
