"""Campaigns: campaign files, audiences, the next-best-action planner, previews.

A campaign is a YAML file in ``config/campaigns/`` (see `nudge.campaigns.schema`)
whose audience is an expression over customer profiles (see
`nudge.campaigns.audience`). The planner (`nudge.campaigns.planner`) decides
per customer at most one campaign, or none with a reason; the service
(`nudge.campaigns.service`) runs it against the store and keeps each plan.
"""
