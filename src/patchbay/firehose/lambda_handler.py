"""Run a :class:`~.processor.MessageProcessor` as an AWS Lambda function::

    # handler.py; the function's handler setting is "handler.handler"
    handler = lambda_handler(MyPartner())

The platform invokes the function synchronously with the message JSON as the payload;
Lambda's Python runtime hands it over already decoded (a ``dict``), and encodes the
returned ``dict``, the response message, as the function's output.

A request that cannot be processed raises its :class:`~.processor.ProcessorError`
(:class:`~.processor.InvalidMessageError`, :class:`~.processor.InvalidSettingsError`,
:class:`~.processor.HandlerError`, ...): Lambda reports it to the caller as a function error
(``X-Amz-Function-Error: Unhandled``, with ``errorType`` the class name and
``errorMessage`` its message). The original exception of the partner's code is logged with
its traceback to the ``patchbay.firehose.lambda_handler`` logger (CloudWatch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from patchbay.firehose.processor import MessageProcessor, ProcessorError
from patchbay.firehose.serialize import to_dict

logger = logging.getLogger(__name__)

#: A Lambda handler: ``(event, context) -> dict``.
LambdaHandler = Callable[[Any, Any], dict[str, Any]]


def lambda_handler(processor: MessageProcessor) -> LambdaHandler:
    """A Lambda handler that answers each invocation's message with ``processor``.

    The event may also be JSON text (``str`` or ``bytes``), e.g. from a caller that
    encoded the message twice. The context is not used.
    """

    def handler(event: Any, context: Any = None) -> dict[str, Any]:
        try:
            response = processor.process(event)
        except ProcessorError as exc:
            if exc.status >= 500:
                logger.error("%s", exc.message, exc_info=exc)
            else:
                logger.warning("%s: %s", type(exc).__name__, exc.message)
            raise
        return to_dict(response)

    handler.__doc__ = f"The Firehose Lambda handler of {type(processor).__name__}."
    return handler
