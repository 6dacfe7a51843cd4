temporal workflow start \
  --task-queue helm-build \
  --type BuildPlanWorkflow \
  --workflow-id build-plan-demo \
  --input '{"plan_name": "demo-plan", "phases": [
    {"number": 1, "agent_type": "dev", "description": "Scaffold the service", "context_refs": ["docs/plan.md"]},
    {"number": 2, "agent_type": "claudebox", "description": "Write and run the tests"}
  ]}'
