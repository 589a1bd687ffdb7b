"""LangChain's own standard chat-model suite (langchain-tests, unmodified) through
``ChatOpenAI(base_url=.../v1, api_key="EMPTY")`` against a live `kinject serve`, as a
LangChain user points it at any OpenAI-compatible server.

Only the constructor is provided, and the features the suite lets an integration declare
unsupported are declared as kinject has them: it calls no tools, gives no structured or
JSON output and reads no images, audio or PDFs. Everything else runs as the suite wrote it.
"""

from __future__ import annotations

from typing import Any

import pytest
from _api_helpers import Served
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

# The suite's async tests run on pytest-asyncio, one event loop for the module: ChatOpenAI
# caches its async HTTP client, which is bound to the loop it was made on. The mark reaches
# the sync tests too, where pytest-asyncio warns and does nothing.
pytestmark = [
    pytest.mark.kafka, pytest.mark.peer, pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings(
        "ignore:The test <Function .*is marked with '@pytest.mark.asyncio' but it is not an "
        "async function:pytest.PytestWarning"),
]


class TestKinjectThroughChatOpenAI(ChatModelIntegrationTests):
    url = ""

    @pytest.fixture(autouse=True)
    def _kinject(self, peer_served: Served) -> None:
        type(self).url = peer_served.url

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # stream_usage: ChatOpenAI asks for the usage chunk only from api.openai.com unless
        # told; a user of any other server sets it like this.
        return {"model": "kinject", "base_url": f"{self.url}/v1", "api_key": "EMPTY",
                "stream_usage": True, "max_retries": 0, "timeout": 120}

    @property
    def model_override_value(self) -> str:
        return "kinject-base"

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False
