import DevCloud
import SnapmountAgent
import SnapmountCore

let releaseSnapshot = "snap-0123456789abcdef0"

func fastSettings() -> DevCloudSettings {
    var settings = DevCloudSettings()
    settings.delays.volumeCreate = .milliseconds(150)
    settings.delays.attach = .milliseconds(300)
    settings.delays.detach = .milliseconds(100)
    settings.delays.delete = .milliseconds(100)
    settings.hangDuration = .seconds(3)
    return settings
}

func fastTuning() -> CloudTuning {
    var tuning = CloudTuning()
    tuning.retry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(20), maxBackoff: .milliseconds(200))
    tuning.ec2Timeout = .seconds(2)
    tuning.sourceTimeout = .seconds(2)
    tuning.imdsRetry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(20), maxBackoff: .milliseconds(200))
    tuning.imdsTimeout = .seconds(1)
    return tuning
}
