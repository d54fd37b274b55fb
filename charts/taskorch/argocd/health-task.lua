-- Argo CD health of a taskorch Task (resource.customizations.health.taskorch.io_Task).
-- Progressing while it waits or runs, Healthy once it succeeded (or was skipped as a duplicate),
-- Degraded when it failed, was dead-lettered or cancelled, Suspended while spec.suspend holds it.
local hs = {status = "Progressing", message = "waiting for the taskorch operator"}
if obj.status == nil or obj.status.phase == nil then
  if obj.spec ~= nil and obj.spec.suspend then hs.status = "Suspended" end
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "the operator has not seen the latest change yet"
  return hs
end
local phase = obj.status.phase
hs.message = phase
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Succeeded" then hs.message = phase .. ": " .. (c.message or c.reason or "") end
  end
end
if phase == "Succeeded" or phase == "Skipped" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "DeadLettered" or phase == "Cancelled" then
  hs.status = "Degraded"
elseif phase == "Pending" and obj.spec ~= nil and obj.spec.suspend then
  hs.status = "Suspended"
end
return hs
