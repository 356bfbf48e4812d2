-- Argo CD health of a modeldeploy.io ModelDeployment, read from the status the operator writes.
-- The operator states its health in Argo CD's words (status.phase); only Paused is called Suspended here.
local hs = {}
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.metadata.generation ~= obj.status.observedGeneration then
  hs.status = "Progressing"
  hs.message = "Waiting for rollout spec update to be observed"
  return hs
end
local statuses = {
  Healthy = "Healthy",
  Progressing = "Progressing",
  Paused = "Suspended",
  Degraded = "Degraded",
}
hs.status = statuses[obj.status.phase]
if hs.status == nil then
  hs.status = "Unknown"
  hs.message = "Unrecognized status.phase: " .. tostring(obj.status.phase)
  return hs
end
hs.message = obj.status.message or ""
return hs
