-- Argo CD health of a taskorch Workflow (resource.customizations.health.taskorch.io_Workflow).
-- Progressing while steps run, Healthy once every step succeeded, Degraded when it failed or was
-- cancelled, Suspended while spec.suspend holds new steps.
local hs = {status = "Progressing", message = "waiting for the taskorch operator"}
if obj.status == nil or obj.status.phase == nil then return hs end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "the operator has not seen the latest change yet"
  return hs
end
local phase = obj.status.phase
hs.message = phase .. " " .. (obj.status.progress or "")
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Succeeded" and c.message ~= nil then hs.message = hs.message .. ": " .. c.message end
  end
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
end
return hs
