from realtime_voicebot.cli import main

main()
