"""The SQLite example partner as an AWS Lambda function.

Handler setting: ``examples.sqlite_partner.handler.handler`` (with the ``examples``
package at the root of the deployment package). The database file is
``$SQLITE_PARTNER_DB``, read at each invocation (on Lambda, put it under ``/tmp``).

Try it locally with the Lambda Invoke API stand-in::

    SQLITE_PARTNER_DB=/tmp/partner.db python -m patchbay.partner.lambda_local \\
        --function sqlite-partner=examples.sqlite_partner.handler:handler --port 9001
"""

from __future__ import annotations

from examples.sqlite_partner.partner import SqlitePartner
from patchbay.firehose.lambda_handler import lambda_handler

#: Built once per Lambda instance, reused by every invocation.
handler = lambda_handler(SqlitePartner())
