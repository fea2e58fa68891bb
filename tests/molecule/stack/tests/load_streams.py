"""Many concurrent streaming chat completions with the openai SDK; prints one JSON line.

Runs inside the test host with vLLM's own interpreter (the SDK is one of vLLM's dependencies):
  python load_streams.py BASE_URL MODEL CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from openai import AsyncOpenAI


async def one(client: AsyncOpenAI, model: str) -> tuple[float | None, bool, str | None]:
    started = time.perf_counter()
    first = None
    finished = False
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Count to ten."}],
            max_tokens=16,
            stream=True,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content is not None:
                first = time.perf_counter() - started
            if chunk.choices and chunk.choices[0].finish_reason:
                finished = True
    # Every failure is counted, not raised: the figures must cover all requests.
    except Exception as error:
        return first, finished, f"{type(error).__name__}: {error}"
    return first, finished, None


async def main(base_url: str, model: str, concurrency: int) -> None:
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    started = time.perf_counter()
    results = await asyncio.gather(*(one(client, model) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ttft = sorted(first for first, _, error in results if first is not None and error is None)
    errors = [error for _, _, error in results if error]
    print(
        json.dumps(
            {
                "requests": concurrency,
                "errors": len(errors),
                "first_errors": errors[:3],
                "truncated": sum(1 for _, finished, error in results if not finished and error is None),
                "seconds": round(elapsed, 2),
                "requests_per_s": round(concurrency / elapsed, 1),
                "ttft_p50_ms": round(statistics.median(ttft) * 1000) if ttft else None,
                "ttft_p99_ms": round(ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] * 1000) if ttft else None,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
