@echo off
REM Overnight training on one GPU with the rtx3060 preset (Windows twin of train_overnight.sh).
REM
REM   examples\train_overnight.bat --data path\to\data --model-name gpt2 [more theta-train flags]
REM
REM All output is appended to logs\overnight_<preset>_<timestamp>.log. After an abnormal exit
REM (crash, OOM kill, power blip) theta-train is started again with --resume auto, at most
REM MAX_RESTARTS times (default 3), so no completed epoch is lost. Exit codes 1 and 2 are user
REM errors (bad data, bad flags, full disk): restarting cannot fix them, so the script stops; so do
REM 130 and 143, a clean stop after Ctrl+C or SIGTERM (a checkpoint was saved: resume it later).
REM Each "===" line goes to the console and to the log, as in train_overnight.sh (tests/test_overnight.py
REM compares the two scripts line for line: keep them twins).
setlocal EnableDelayedExpansion
if "%PRESET%"=="" set PRESET=rtx3060
if "%MAX_RESTARTS%"=="" set MAX_RESTARTS=3
REM RESTART_DELAY: seconds between a crash and the restart
if "%RESTART_DELAY%"=="" set RESTART_DELAY=10
if "%THETA_TRAIN%"=="" set THETA_TRAIN=theta-train
if not exist logs mkdir logs
for /f "tokens=2 delims==" %%i in ('wmic os get localdatetime /value 2^>nul') do set STAMP=%%i
if "%STAMP%"=="" set STAMP=%RANDOM%
set LOG=logs\overnight_%PRESET%_%STAMP:~0,8%_%STAMP:~8,6%.log
set ATTEMPT=0
set EXTRA=

:run
set /a SHOWN=ATTEMPT+1
set "MSG=attempt !SHOWN!: %THETA_TRAIN% --preset %PRESET% %* !EXTRA!"
call :say
powershell -NoProfile -Command "%THETA_TRAIN% --preset $env:PRESET %* $env:EXTRA.Split(' ',[StringSplitOptions]::RemoveEmptyEntries) 2>&1 | Tee-Object -FilePath $env:LOG -Append; exit $LASTEXITCODE"
set RC=%ERRORLEVEL%
if %RC%==0 (
  set "MSG=training finished"
  call :say
  exit /b 0
)
if %RC%==1 goto usererror
if %RC%==2 goto usererror
if %RC%==130 goto stopped
if %RC%==143 goto stopped
set /a ATTEMPT+=1
if %ATTEMPT% GTR %MAX_RESTARTS% (
  set "MSG=exit %RC%; gave up after %MAX_RESTARTS% restarts"
  call :say
  exit /b %RC%
)
set "MSG=exit %RC%; restarting with --resume auto in %RESTART_DELAY% s (%ATTEMPT%/%MAX_RESTARTS%)"
call :say
set EXTRA=--resume auto
timeout /t %RESTART_DELAY% /nobreak >nul
goto run

:usererror
set "MSG=theta-train refused the input (exit %RC%); fix it and run again"
call :say
exit /b %RC%

:stopped
set "MSG=stopped on request (exit %RC%); continue later with --resume auto"
call :say
exit /b %RC%

REM One "===" line, on the console and appended to the log (delayed expansion: MSG may hold ( ) ; and quotes).
:say
echo === %DATE% %TIME% !MSG!
>> "%LOG%" echo === %DATE% %TIME% !MSG!
exit /b 0
