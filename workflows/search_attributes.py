"""Tollway's custom search attributes (all Keyword, all prefixed: never a system name)."""

from temporalio.common import SearchAttributeKey

ORGANIZATION_ID = SearchAttributeKey.for_keyword("TollwayOrganizationId")
PUBLIC_WORKFLOW_ID = SearchAttributeKey.for_keyword("TollwayWorkflowId")
STATUS = SearchAttributeKey.for_keyword("TollwayStatus")
PAYMENT_STATUS = SearchAttributeKey.for_keyword("TollwayPaymentStatus")
SOURCE_SYSTEM = SearchAttributeKey.for_keyword("TollwaySourceSystem")
EXTERNAL_REF = SearchAttributeKey.for_keyword("TollwayExternalRef")
SOURCE_ENTITY_TYPE = SearchAttributeKey.for_keyword("TollwaySourceEntityType")
SOURCE_ENTITY_ID = SearchAttributeKey.for_keyword("TollwaySourceEntityId")

ALL = (
    ORGANIZATION_ID,
    PUBLIC_WORKFLOW_ID,
    STATUS,
    PAYMENT_STATUS,
    SOURCE_SYSTEM,
    EXTERNAL_REF,
    SOURCE_ENTITY_TYPE,
    SOURCE_ENTITY_ID,
)
#: The list's filters that match one search attribute exactly: query parameter -> attribute.
FILTERS = {
    "status": STATUS,
    "paymentStatus": PAYMENT_STATUS,
    "sourceSystem": SOURCE_SYSTEM,
    "sourceEntityType": SOURCE_ENTITY_TYPE,
    "sourceEntityId": SOURCE_ENTITY_ID,
    "externalRef": EXTERNAL_REF,
}
