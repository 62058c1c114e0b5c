"""Tollway's custom search attributes (all Keyword, all prefixed: never a system name)."""

from temporalio.common import SearchAttributeKey

ORGANIZATION_ID = SearchAttributeKey.for_keyword("TollwayOrganizationId")
PUBLIC_WORKFLOW_ID = SearchAttributeKey.for_keyword("TollwayWorkflowId")
STATUS = SearchAttributeKey.for_keyword("TollwayStatus")
PAYMENT_STATUS = SearchAttributeKey.for_keyword("TollwayPaymentStatus")
SOURCE_SYSTEM = SearchAttributeKey.for_keyword("TollwaySourceSystem")
EXTERNAL_REF = SearchAttributeKey.for_keyword("TollwayExternalRef")

ALL = (ORGANIZATION_ID, PUBLIC_WORKFLOW_ID, STATUS, PAYMENT_STATUS, SOURCE_SYSTEM, EXTERNAL_REF)
