"""Every operation of Firecracker's OpenAPI description, as a table.

Transcribed by hand from `src/firecracker/swagger/firecracker.yaml` of
firecracker-microvm/firecracker at commit 004d935399ba (API version
1.17.0-dev; Apache-2.0): one row per path and method with its operationId
and the success status the description gives. The file itself is not
copied here; this table is the list of facts the conformance test walks.
When the pinned description changes, update the pin and the rows together.
"""

PINNED = "firecracker.yaml @ 004d935399ba6062240af269638635d54229f5bf (1.17.0-dev)"

# (method, path, operationId, success status in the description)
OPERATIONS = [
    ("GET", "/", "describeInstance", 200),
    ("PUT", "/actions", "createSyncAction", 204),
    ("GET", "/balloon", "describeBalloonConfig", 200),
    ("PUT", "/balloon", "putBalloon", 204),
    ("PATCH", "/balloon", "patchBalloon", 204),
    ("GET", "/balloon/statistics", "describeBalloonStats", 200),
    ("PATCH", "/balloon/statistics", "patchBalloonStatsInterval", 204),
    ("PATCH", "/balloon/hinting/start", "startBalloonHinting", 204),
    ("GET", "/balloon/hinting/status", "describeBalloonHinting", 200),
    ("PATCH", "/balloon/hinting/stop", "stopBalloonHinting", 204),
    ("PUT", "/boot-source", "putGuestBootSource", 204),
    ("PUT", "/cpu-config", "putCpuConfiguration", 204),
    ("PUT", "/drives/{drive_id}", "putGuestDriveByID", 204),
    ("PATCH", "/drives/{drive_id}", "patchGuestDriveByID", 204),
    ("PUT", "/pmem/{id}", "putGuestPmemByID", 204),
    ("PATCH", "/pmem/{id}", "patchGuestPmemByID", 204),
    ("PUT", "/logger", "putLogger", 204),
    ("GET", "/machine-config", "getMachineConfiguration", 200),
    ("PUT", "/machine-config", "putMachineConfiguration", 204),
    ("PATCH", "/machine-config", "patchMachineConfiguration", 204),
    ("PUT", "/metrics", "putMetrics", 204),
    ("PUT", "/mmds", "putMmds", 204),
    ("PATCH", "/mmds", "patchMmds", 204),
    ("GET", "/mmds", "getMmds", 200),
    ("PUT", "/mmds/config", "putMmdsConfig", 204),
    ("PUT", "/entropy", "putEntropyDevice", 204),
    ("PUT", "/serial", "putSerialDevice", 204),
    ("PUT", "/hotplug/memory", "putMemoryHotplug", 204),
    ("PATCH", "/hotplug/memory", "patchMemoryHotplug", 204),
    ("GET", "/hotplug/memory", "getMemoryHotplug", 200),
    ("PUT", "/network-interfaces/{iface_id}", "putGuestNetworkInterfaceByID", 204),
    ("PATCH", "/network-interfaces/{iface_id}", "patchGuestNetworkInterfaceByID", 204),
    ("PUT", "/snapshot/create", "createSnapshot", 204),
    ("PUT", "/snapshot/load", "loadSnapshot", 204),
    ("GET", "/version", "getFirecrackerVersion", 200),
    ("PATCH", "/vm", "patchVm", 204),
    ("GET", "/vm/config", "getExportVmConfig", 200),
    ("PUT", "/vsock", "putGuestVsock", 204),
]
