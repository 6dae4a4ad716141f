"""A minimal ReAct agent for LangGraph's dev server, pointed at paddock-bench's fake model.

Two graphs: `instant` (the fake answers at once) and `stream` (the fake's streaming profile,
`$TTFT_PROFILE`). Both have one tool, `read_file`, like Paddock's built-in.
"""

import os

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent


@tool
def read_file(path: str) -> str:
    """Read a file from the workspace."""
    return f"no such file: {path}"


def _agent(model: str):
    llm = ChatOpenAI(
        model=model,
        base_url=os.environ["FAKE_MODEL_URL"],
        api_key="bench",
        streaming=True,
        max_retries=0,
    )
    return create_react_agent(llm, [read_file], prompt="You are a benchmark agent.")


instant = _agent("instant")
stream = _agent(os.environ.get("TTFT_PROFILE", "stream-50-50-20"))
