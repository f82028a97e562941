"""A peer: dlt with its filesystem destination in Parquet, as dlt's docs show a REST
source: one resource yielding every flow's execution records (paged with boto3, the
client dlt users reach for on AWS), merged on execution_id, into a local folder.

Usage: python dlt_export.py ENDPOINT DEST
"""
import sys

import boto3
import dlt


def paged(call, key, **args):
    """Every item of a nextToken-paged call (botocore has no paginator for AppFlow)."""
    token = None
    while True:
        page = call(**args, **({"nextToken": token} if token else {}))
        yield from page.get(key, [])
        token = page.get("nextToken")
        if not token:
            return


def main():
    endpoint, dest = sys.argv[1], sys.argv[2]
    appflow = boto3.client("appflow", endpoint_url=endpoint, region_name="us-east-1")

    @dlt.resource(name="executions", write_disposition="append", primary_key="executionId")
    def executions():
        for flow in paged(appflow.list_flows, "flows", maxResults=100):
            for r in paged(appflow.describe_flow_execution_records, "flowExecutions",
                           flowName=flow["flowName"], maxResults=100):
                yield {"flow_name": flow["flowName"], "flow_arn": flow["flowArn"], **r}

    pipeline = dlt.pipeline(pipeline_name="appflow_history", destination=dlt.destinations.filesystem(dest),
                            dataset_name="appflow", pipelines_dir=dest + "/.dlt")
    info = pipeline.run(executions(), loader_file_format="parquet")
    print(info)


if __name__ == "__main__":
    main()
