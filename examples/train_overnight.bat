@echo off
REM Overnight training on one GPU with the rtx3060 preset (Windows twin of train_overnight.sh).
REM
REM   examples\train_overnight.bat --data path\to\data --model-name gpt2 [more theta-train flags]
REM
REM All output is appended to logs\overnight_<preset>_<timestamp>.log. After an abnormal exit
REM theta-train is started again with --resume auto, at most MAX_RESTARTS times (default 3).
REM Exit codes 1 and 2 are user errors (bad data, bad flags, full disk) and 130/143 a clean stop
REM after Ctrl+C or SIGTERM (a checkpoint was saved): the script stops on them.
setlocal EnableDelayedExpansion
if "%PRESET%"=="" set PRESET=rtx3060
if "%MAX_RESTARTS%"=="" set MAX_RESTARTS=3
if "%RESTART_DELAY%"=="" set RESTART_DELAY=10
if not exist logs mkdir logs
for /f "tokens=2 delims==" %%i in ('wmic os get localdatetime /value 2^>nul') do set STAMP=%%i
if "%STAMP%"=="" set STAMP=%RANDOM%
set LOG=logs\overnight_%PRESET%_%STAMP:~0,8%_%STAMP:~8,6%.log
set ATTEMPT=0
set EXTRA=

:run
set /a SHOWN=ATTEMPT+1
echo === %DATE% %TIME% attempt !SHOWN!: theta-train --preset %PRESET% %* !EXTRA! >> "%LOG%"
echo === attempt !SHOWN!: theta-train --preset %PRESET% %* !EXTRA!   (log: %LOG%)
powershell -NoProfile -Command "theta-train --preset $env:PRESET %* $env:EXTRA.Split(' ',[StringSplitOptions]::RemoveEmptyEntries) 2>&1 | Tee-Object -FilePath $env:LOG -Append; exit $LASTEXITCODE"
set RC=%ERRORLEVEL%
if %RC%==0 (
  echo === %DATE% %TIME% training finished >> "%LOG%"
  exit /b 0
)
if %RC%==1 goto usererror
if %RC%==2 goto usererror
if %RC%==130 goto stopped
if %RC%==143 goto stopped
set /a ATTEMPT+=1
if %ATTEMPT% GTR %MAX_RESTARTS% (
  echo === %DATE% %TIME% exit %RC%; gave up after %MAX_RESTARTS% restarts >> "%LOG%"
  exit /b %RC%
)
echo === %DATE% %TIME% exit %RC%; restarting with --resume auto in %RESTART_DELAY% s (%ATTEMPT%/%MAX_RESTARTS%) >> "%LOG%"
set EXTRA=--resume auto
timeout /t %RESTART_DELAY% /nobreak >nul
goto run

:usererror
echo === %DATE% %TIME% theta-train refused the input (exit %RC%); fix it and run again >> "%LOG%"
exit /b %RC%

:stopped
echo === %DATE% %TIME% stopped on request (exit %RC%); continue later with --resume auto >> "%LOG%"
exit /b %RC%
